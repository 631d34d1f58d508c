"""Task streams (scenarios): the data model and the registry of stream families by name.

Example:
    >>> import scenarios
    >>> stream = scenarios.build("split-digits", {"num_tasks": 5}, seed=0)
    >>> len(stream), stream.spec.protocol
    (5, 'class-incremental')
"""

from __future__ import annotations

from typing import Any, Mapping

from scenarios.base import (PROTOCOLS, Episodes, Family, GroupedPool, LabelledPool, Params, Registry,
                            Stream, StreamSpec, Support, Task)

FAMILIES = Registry("scenario", {
    "sinusoid": "scenarios.sinusoid:SINUSOID",
    "split-digits": "scenarios.digits:SPLIT_DIGITS",
    "permuted-digits": "scenarios.digits:PERMUTED_DIGITS",
    "rotated-digits": "scenarios.digits:ROTATED_DIGITS",
})


def family(name: str) -> Family:
    """The registered family ``name`` (a ``KeyError`` listing the valid names otherwise)."""
    return FAMILIES.get(name)


def available() -> list[str]:
    """Names of every registered stream family."""
    return FAMILIES.names()


def build(name: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> Stream:
    """Build the stream ``name`` from a mapping of parameters (validated) and a seed."""
    fam = family(name)
    return fam.build(fam.params(**dict(params or {})), seed)


__all__ = ["Episodes", "Family", "GroupedPool", "LabelledPool", "PROTOCOLS", "Params", "Stream",
           "StreamSpec", "Support", "Task", "FAMILIES", "available", "build", "family"]
