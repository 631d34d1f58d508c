"""``online``: any task stream presented online, each task's training data once, in small batches.

The single-pass protocol of GEM, MER and La-MAML: the tasks of a task stream (any registered
family but the online ones, or a user stream function) arrive in stream order; each task's
training examples are shuffled from the seed and played once, ``batch_size`` at a time (a
task's last batch may be smaller; no batch mixes two tasks). Batch ``t`` carries the source
task's id, pool 0 of the single pool ``"tasks"``, and ``switch`` at each task's first batch.
The columns are the source stream's tasks (their held-out test pools), one per task id, and
the spec is the source's, so the anytime tensor's rows at the task boundaries are the task
loop's ``C[i, j, k]``. With ``boundaries = "given"`` the learner is told the task id.

**MER's MNIST Rotations and Permutations** (Riemer et al. 2019; 20 tasks x 1000 training
examples, batch size 10, one pass) are the reference case, which the MNIST families express
with their defaults (``num_tasks = 20``, ``train_per_task = 1000``, a seeded subset per task).
MNIST Permutations::

    [scenario]
    name = "online"
    source = "permuted-mnist"
    batch_size = 10

and MNIST Rotations (``source = "rotated-mnist"``). MER uses GEM's data script
(``mnist_rotations.py --min_rot 0 --max_rot 180 --n_tasks 20``), which draws task t's angle
uniformly within the t-th of 20 equal parts of [0, 180] degrees: increasing angles about 9
degrees apart. The closest expression here is rotated-mnist's default, angles evenly spaced
from 0 to 180 (``random_angles = true`` draws them independently over the whole range, in no
order, which is not GEM's scheme); the angles differ from GEM's by a few degrees per task.

``examples_per_task`` takes a seeded subset of each task's training pool instead (MER's 1000
out of a larger pool). Every task's test pool is the full MNIST test set under its transform
(``test_per_task`` to subsample it).

Example:
    >>> import scenarios
    >>> stream = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2},
    ...                                     "batch_size": 50}, seed=0)
    >>> b = stream.batch(0)
    >>> len(stream.columns), b.task, b.switch, tuple(b.x.shape)
    (2, 0, True, (50, 1, 8, 8))
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor

from scenarios.base import Family, ScenarioError, Stream
from scenarios.params import Params
from scenarios.rng import ONLINE_ORDER, generator
from scenarios.online import (BOUNDARIES_HELP, Boundaries, OnlineFamily, OnlineStream, Switching, nested_params,
                              take)


def _task_family(name: str) -> Family:
    """The task-stream family ``name`` (``ValueError`` naming the valid ones otherwise)."""
    import scenarios  # the registry imports this module

    try:
        family = scenarios.family(name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    except ScenarioError as err:
        raise ValueError(str(err)) from None
    if isinstance(family, OnlineFamily):
        raise ValueError(f"{name!r} is already an online stream; the source must be a task stream "
                         f"(e.g. permuted-mnist, rotated-mnist, split-digits)")
    return family


class OnlineTasksParams(Params):
    source: str = Field(description="the task stream presented online: a registered scenario name or "
                                    "\"package.module:function\"")
    # Validated even when left out: a source may require parameters.
    source_params: dict[str, Any] = Field(default_factory=dict, validate_default=True,
                                          description="parameters of the source stream")
    batch_size: int = Field(10, gt=0, description="examples per batch (MER: 10)")
    examples_per_task: int | None = Field(None, gt=0, description="training examples played per task, a seeded subset "
                                                                   "(default: all of each task's training pool)")
    boundaries: Boundaries = Field("hidden", description=BOUNDARIES_HELP)
    data_root: str | None = Field(None, min_length=1, description="data root passed to a source that reads files")

    @field_validator("source")
    @classmethod
    def _known(cls, name: str) -> str:
        _task_family(name)
        return name

    @field_validator("source_params")
    @classmethod
    def _valid(cls, values: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "source" in info.data:  # else the source's own error is reported
            nested_params(_task_family(info.data["source"]), values)
        return values


def present(stream: Stream, batch_size: int, examples_per_task: int | None, boundaries: Boundaries,
            seed: int) -> OnlineStream:
    """The task stream ``stream`` presented online (see the module docstring).

    Raises:
        ScenarioError: the stream is few-shot (its labels only mean something within an
            episode), or a task has fewer than ``examples_per_task`` training examples.

    Example:
        >>> import torch
        >>> from scenarios.custom import from_tensors
        >>> x, y = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> online = present(from_tensors([(x, y, x, y), (x, y + 2, x, y + 2)]), 4, None, "hidden", seed=0)
        >>> [len(b.y) for b in online.batches()], online.meta()["switch"].tolist()
        ([4, 2, 4, 2], [True, False, True, False])
    """
    if stream.spec.protocol == "few-shot":
        raise ScenarioError(f"{stream.spec.name} is a few-shot stream: its labels only mean something within an "
                            f"episode, so it cannot be presented online; use a class-, task- or domain-incremental one")
    orders = [_order(task, i, examples_per_task, seed) for i, task in enumerate(stream)]
    sizes = np.array([math.ceil(len(o) / batch_size) for o in orders])
    position = np.repeat(np.arange(len(stream)), sizes)  # stream position of each batch
    first = np.cumsum(sizes) - sizes                       # first batch of each position
    switch = np.zeros(len(position), dtype=bool)
    switch[first] = True
    ids = np.array([t.id for t in stream], dtype=np.int64)
    meta = Switching(task=ids[position], pool=np.zeros(len(position), dtype=np.int64), switch=switch,
                     task_pool=np.zeros(ids.max() + 1, dtype=np.int64))
    columns = tuple(sorted({t.id: t for t in stream}.values(), key=lambda t: t.id))
    return OnlineStream(stream.spec, ("tasks",), boundaries, columns, meta,
                        _drawer(stream, orders, position, first, batch_size))


def _order(task, position: int, examples: int | None, seed: int) -> Tensor:
    """The training examples of the task at ``position`` in the order they are played."""
    n = len(task.train)
    if examples is not None and examples > n:
        raise ScenarioError(f"examples_per_task = {examples} exceeds the {n} training examples of task "
                            f"{position} ({task.name})")
    return torch.randperm(n, generator=generator(seed, ONLINE_ORDER, position))[:examples]


def _drawer(stream: Stream, orders: list[Tensor], position: np.ndarray, first: np.ndarray,
            batch_size: int) -> Callable[[int], tuple[Tensor, Tensor]]:
    def draw(t: int) -> tuple[Tensor, Tensor]:
        i = int(position[t])
        start = (t - int(first[i])) * batch_size
        return take(stream[i].train, orders[i][start:start + batch_size])

    return draw


def build(params: OnlineTasksParams, seed: int) -> OnlineStream:
    family = _task_family(params.source)
    values = dict(params.source_params)
    if params.data_root is not None and "data_root" in family.params.model_fields:
        values.setdefault("data_root", params.data_root)
    stream = family.build(family.params(**values), seed)
    return present(stream, params.batch_size, params.examples_per_task, params.boundaries, seed)


ONLINE_TASKS = OnlineFamily("online", OnlineTasksParams, build,
                            "online: any task stream presented online, each task's training data once in batches "
                            "(MER's MNIST Rotations/Permutations: permuted-/rotated-mnist, batch_size 10)")
