"""Task streams (scenarios): the data model and the registry of stream families by name.

Example:
    >>> import scenarios
    >>> stream = scenarios.build("split-digits", {"num_tasks": 5}, seed=0)
    >>> len(stream), stream.spec.protocol
    (5, 'class-incremental')
"""

from __future__ import annotations

from typing import Any, Mapping

from scenarios.base import (PROTOCOLS, Episodes, Family, GroupedPool, ImagePool, LabelledPool, ScenarioError, Stream,
                            StreamSpec, Support, Task)
from scenarios.custom import from_datasets, from_tensors
from scenarios.online import Batch, OnlineFamily, OnlineStream
from scenarios.params import Params
from scenarios.registry import Registry

FAMILIES = Registry("scenario", {
    "sinusoid": "scenarios.sinusoid:SINUSOID",
    "split-digits": "scenarios.digits:SPLIT_DIGITS",
    "permuted-digits": "scenarios.digits:PERMUTED_DIGITS",
    "rotated-digits": "scenarios.digits:ROTATED_DIGITS",
    "split-mnist": "scenarios.mnist:SPLIT_MNIST",
    "split-fashion-mnist": "scenarios.mnist:SPLIT_FASHION_MNIST",
    "permuted-mnist": "scenarios.mnist:PERMUTED_MNIST",
    "rotated-mnist": "scenarios.mnist:ROTATED_MNIST",
    "omniglot-fewshot": "scenarios.omniglot:OMNIGLOT_FEWSHOT",
    "omniglot-alphabets": "scenarios.omniglot:OMNIGLOT_ALPHABETS",
    "schedule": "scenarios.schedule:SCHEDULE",
    "osaka": "scenarios.osaka:OSAKA",
    "switching-sinusoid": "scenarios.switching_sinusoid:SWITCHING_SINUSOID",
    "online": "scenarios.online_tasks:ONLINE_TASKS",
})


def family(name: str) -> Family:
    """The registered family ``name`` (a ``KeyError`` listing the valid names otherwise), or,
    for a name of the form ``"package.module:function"``, a family wrapping that user function
    (see :func:`scenarios.custom.callable_family`; a :class:`ScenarioError` if it is unusable)."""
    if ":" in name:
        from scenarios.custom import callable_family

        return callable_family(name)
    return FAMILIES.get(name)


def available() -> list[str]:
    """Names of every registered stream family."""
    return FAMILIES.names()


def build(name: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> Stream | OnlineStream:
    """Build the stream ``name`` from a mapping of parameters (validated) and a seed: a task
    :class:`Stream`, or an :class:`OnlineStream` for an online family (an :class:`OnlineFamily`).

    Raises:
        ScenarioError: the stream's data files are missing or damaged
            (:class:`scenarios.data.DataError`), or a user stream function broke its contract.
    """
    fam = family(name)
    return fam.build(fam.params(**dict(params or {})), seed)


__all__ = ["Batch", "Episodes", "Family", "GroupedPool", "ImagePool", "LabelledPool", "OnlineFamily", "OnlineStream",
           "PROTOCOLS", "Params", "ScenarioError", "Stream", "StreamSpec", "Support", "Task", "FAMILIES", "available",
           "build", "family", "from_datasets", "from_tensors"]
