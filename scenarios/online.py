"""Online, task-free streams (docs/design.md, "The online loop"): the types and the helpers
their families share.

An :class:`OnlineStream` is a long sequence of small labelled :class:`Batch` objects that a
learner must predict before it sees their labels. Unlike a :class:`~scenarios.base.Stream`
it is never materialised: its per-batch metadata (task id, pool, switch flag) is a few
integer arrays computed from the seed, and batch ``t`` is drawn on demand from a generator
seeded by ``(seed, t)``, so ``stream.batch(t)`` is random access, costs O(batch) and is the
same whether the stream is read from the start or resumed in the middle.

The families: ``osaka`` (:mod:`scenarios.osaka`), ``switching-sinusoid``
(:mod:`scenarios.switching_sinusoid`) and ``online``, any task stream presented online
(:mod:`scenarios.online_tasks`). They are registered as :class:`OnlineFamily` objects, so that
a caller can tell an online family from a task-stream family before building it.

Example:
    >>> import torch
    >>> from scenarios.base import StreamSpec
    >>> meta = switching(length=6, switch_prob=0.5, pool_probs=(1.0,), recur_prob=0.0, seed=0)
    >>> spec = StreamSpec("toy", "regression", "few-shot", (1,), 1, num_tasks=1, shots=1, query=1)
    >>> stream = OnlineStream(spec, ("sine",), "hidden", (), meta,
    ...                       draw=lambda t: (torch.full((2, 1), float(t)), torch.zeros(2, 1)))
    >>> len(stream), bool(stream.batch(0).switch), stream.batch(3).x[0].item()
    (6, True, 3.0)
"""

from __future__ import annotations

import math
import operator
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import Tensor

from scenarios.base import Family, ImagePool, LabelledPool, Source, Stream, StreamSpec, Task
from scenarios.rng import ONLINE_SWITCHES, generator

Boundaries = Literal["given", "hidden"]
BOUNDARIES_HELP = "whether the learner is told each batch's task id (given) or not (hidden: task-free)"
CHUNK = 4096  # uniforms are drawn in chunks of this size, each from its own generator (see uniforms)


@dataclass(frozen=True)
class Batch:
    """One batch of an online stream.

    Attributes:
        x: (B, *input_shape) float inputs.
        y: (B,) int64 labels 0..output_size-1 (classification) or (B, out) float targets.
        task: id of the task the batch comes from (a recurring task keeps its id).
        pool: index into :attr:`OnlineStream.pools`.
        switch: whether this batch starts a task (batch 0 always does).
    """

    x: Tensor
    y: Tensor
    task: int
    pool: int
    switch: bool


@dataclass(frozen=True)
class OnlineFamily(Family):
    """A registered family whose ``build(params, seed)`` returns an :class:`OnlineStream`."""


@dataclass(frozen=True)
class Switching:
    """Per-batch metadata of a stream whose task switches at random, plus each task's pool.

    Attributes:
        task: (L,) int64 task id of every batch; ids are numbered by first appearance.
        pool: (L,) int64 pool index of every batch.
        switch: (L,) bool, whether the batch starts a task.
        task_pool: (number of tasks,) int64 pool index of each task id.
    """

    task: np.ndarray
    pool: np.ndarray
    switch: np.ndarray
    task_pool: np.ndarray


def uniforms(n: int, seed: int, *salt: int) -> Tensor:
    """``n`` float64 uniforms in [0, 1) from ``(seed, *salt)``, drawn in chunks of :data:`CHUNK`
    from one generator each, so the first m of them do not depend on ``n``: a longer stream
    begins with the shorter one.

    Example:
        >>> bool((uniforms(5000, 0, 1)[:10] == uniforms(10, 0, 1)).all())
        True
    """
    chunks = [torch.rand(CHUNK, generator=generator(seed, *salt, c), dtype=torch.float64)
              for c in range(math.ceil(n / CHUNK))]
    return torch.cat(chunks)[:n] if chunks else torch.empty(0, dtype=torch.float64)


def switching(length: int, switch_prob: float, pool_probs: Sequence[float], recur_prob: float,
              seed: int) -> Switching:
    """Metadata of ``length`` batches whose task switches with probability ``switch_prob`` per
    batch (batch 0 always starts a task).

    At a switch the new task's pool is drawn from ``pool_probs``; then, with probability
    ``recur_prob``, the task is an earlier task of that pool other than the current one, drawn
    uniformly (it keeps its id), else a new task with the next id. With no such earlier task
    the task is new. The pool is drawn first so that the pools' shares of tasks are
    ``pool_probs`` whatever ``recur_prob`` is.

    The switches and draws are vectorised; assigning ids is one pass over the switches (not the
    batches), O(1) each.

    Example:
        >>> m = switching(8, 0.5, (0.5, 0.5), 0.0, seed=1)
        >>> m.switch.tolist()[0], len(m.task_pool) == int(m.switch.sum())
        (True, True)
    """
    switch = uniforms(length, seed, ONLINE_SWITCHES, 0) < switch_prob
    switch[0] = True
    segment = torch.cumsum(switch, 0) - 1
    n = int(segment[-1]) + 1
    cumulative = torch.tensor(np.cumsum(pool_probs), dtype=torch.float64)
    # Clamped: rounding may leave the last cumulative probability a hair below 1.
    seg_pool = torch.searchsorted(cumulative, uniforms(n, seed, ONLINE_SWITCHES, 1), right=True).clamp_(max=len(pool_probs) - 1)
    recur = (uniforms(n, seed, ONLINE_SWITCHES, 2) < recur_prob).tolist()
    pick = uniforms(n, seed, ONLINE_SWITCHES, 3).tolist()
    seg_task = _assign_ids(seg_pool.tolist(), recur, pick, len(pool_probs))
    task_pool = np.zeros(max(seg_task) + 1, dtype=np.int64)
    task_pool[seg_task] = seg_pool.numpy()
    segment = segment.numpy()
    return Switching(task=np.asarray(seg_task, dtype=np.int64)[segment], pool=seg_pool.numpy()[segment],
                     switch=switch.numpy(), task_pool=task_pool)


def _assign_ids(seg_pool: list[int], recur: list[bool], pick: list[float], n_pools: int) -> list[int]:
    """Task id of each segment (see :func:`switching`)."""
    by_pool: list[list[int]] = [[] for _ in range(n_pools)]  # task ids of each pool, by first appearance
    rank: list[int] = []                                     # position of each task id in its pool's list
    ids: list[int] = []
    for k, p in enumerate(seg_pool):
        current = ids[-1] if ids else -1
        excluded = int(k > 0 and seg_pool[k - 1] == p)  # the current task is never "recurred" to
        candidates = len(by_pool[p]) - excluded
        if recur[k] and candidates > 0:
            r = int(pick[k] * candidates)
            if excluded and r >= rank[current]:
                r += 1  # skip the current task's place in the list
            ids.append(by_pool[p][r])
        else:
            new = len(rank)
            rank.append(len(by_pool[p]))
            by_pool[p].append(new)
            ids.append(new)
    return ids


class OnlineStream:
    """A lazily generated stream of batches with switching tasks (see the module docstring).

    Args:
        spec: what a strategy may know before it starts (its ``num_tasks`` is the number of
            columns).
        pools: names of the pools tasks come from, e.g. ``("omniglot", "mnist", "fashion-mnist")``.
        boundaries: ``"given"`` (the learner may be told the task id) or ``"hidden"``.
        columns: the fixed held-out evaluation columns, tasks with ids ``0..J-1``.
        meta: the per-batch metadata.
        draw: ``draw(t) -> (x, y)``, the inputs and labels of batch ``t``; a pure function of
            ``t`` (its randomness from a generator seeded by the stream's seed and ``t``).
        pretrain: a task stream a meta-learner meta-trains on before the online phase, or None.
    """

    def __init__(self, spec: StreamSpec, pools: tuple[str, ...], boundaries: Boundaries,
                 columns: tuple[Task, ...], meta: Switching, draw: Callable[[int], tuple[Tensor, Tensor]],
                 pretrain: Stream | None = None):
        if sorted(c.id for c in columns) != list(range(len(columns))):
            raise ValueError(f"column ids must be 0..{len(columns) - 1}, got {[c.id for c in columns]}")
        self.spec, self.pools, self.boundaries = spec, pools, boundaries
        self.columns, self.pretrain = columns, pretrain
        self._meta, self._draw = meta, draw

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def __len__(self) -> int:
        return len(self._meta.task)

    def meta(self) -> dict[str, np.ndarray]:
        """``{"task": (L,) int64, "pool": (L,) int64, "switch": (L,) bool}`` (copies), with no
        batch data drawn."""
        m = self._meta
        return {"task": m.task.copy(), "pool": m.pool.copy(), "switch": m.switch.copy()}

    def batch(self, t: int) -> Batch:
        """Batch ``t`` (0 <= t < len(self)), the same on every call."""
        t = operator.index(t)  # a numpy integer becomes a Python int: seeds are mixed in Python arithmetic
        if not 0 <= t < len(self):
            raise IndexError(f"batch {t} is out of range for a stream of {len(self)} batches")
        x, y = self._draw(t)
        m = self._meta
        return Batch(x, y, task=int(m.task[t]), pool=int(m.pool[t]), switch=bool(m.switch[t]))

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The batches ``start, start + 1, ...`` to the end, drawn one at a time."""
        return (self.batch(t) for t in range(start, len(self)))

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()


def take(source: Source, index: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs and labels of the examples ``index`` of a task's source, converting only those
    (images of an :class:`~scenarios.base.ImagePool` leave it as transformed float).

    Sources other than labelled pools are read through ``examples()``.
    """
    if isinstance(source, ImagePool):
        return source.to_float(source.x[index]), source.y[index]
    if isinstance(source, LabelledPool):
        return source.x[index], source.y[index]
    x, y = source.examples()
    return x[index], y[index]


class ByClass:
    """Draws K distinct examples of chosen classes of a :class:`~scenarios.base.LabelledPool`.

    Classes are numbered 0..C-1 in the order of ``pool.classes`` (sorted labels).

    Example:
        >>> import torch
        >>> pool = ImagePool(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), torch.tensor([5, 7, 5, 7, 5, 7]))
        >>> idx = ByClass(pool).draw(torch.tensor([1, 0]), 2, torch.Generator().manual_seed(0))
        >>> pool.y[idx].tolist()
        [[7, 7], [5, 5]]
    """

    def __init__(self, pool: LabelledPool):
        # numpy: its stable sort of 60000 labels takes a millisecond, torch's far longer.
        _, inverse, counts = np.unique(pool.y.numpy(), return_inverse=True, return_counts=True)
        self.order = torch.from_numpy(np.argsort(inverse, kind="stable"))  # the examples, class after class
        self.counts = torch.from_numpy(counts)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def draw(self, classes: Tensor, k: int, gen: torch.Generator) -> Tensor:
        """(len(classes), k) indices into the pool: k distinct examples of each class."""
        counts = self.counts[classes]
        keys = torch.rand(len(classes), int(counts.max()), generator=gen)
        keys.masked_fill_(torch.arange(keys.shape[1]) >= counts[:, None], -1.0)
        positions = keys.topk(k, dim=1).indices
        return self.order[self.starts[classes, None] + positions]


def nested_params(family: Family, values: dict[str, Any]) -> Any:
    """``family.params(**values)`` for a pydantic field validator: its errors are re-raised as
    a ``ValidationError``, which pydantic locates under the field being validated (so an
    experiment file's error names ``scenario.<field>.<key>``).

    Errors inside one member of a union-typed field (``float | list[float]``) keep only the
    member that matched furthest, without its type name in the location, as
    :mod:`simulator.config` reports top-level ones; an unknown key lists the nested model's keys.
    """
    try:
        return family.params(**values)
    except ValidationError as err:
        errors = _one_per_union(err.errors(), family.params)
        raise ValidationError.from_exception_data(family.params.__name__, [
            _details(e, family.params) for e in errors]) from None


def _one_per_union(errors: list[dict], model: type) -> list[dict]:
    plain, unions = [], {}
    for e in errors:
        if not _in_union_member(model, e["loc"]):
            plain.append(e)
        elif e["loc"][0] not in unions or len(e["loc"]) > len(unions[e["loc"][0]]["loc"]):
            unions[e["loc"][0]] = e
    return plain + [{**e, "loc": (e["loc"][0], *e["loc"][2:])} for e in unions.values()]


def _in_union_member(model: type, loc: tuple) -> bool:
    """Whether pydantic put a union member's type name after the field's name in ``loc``."""
    field = model.model_fields.get(loc[0]) if loc and isinstance(loc[0], str) else None
    if field is None or len(loc) < 2 or not isinstance(loc[1], str):
        return False
    members = [a for a in typing.get_args(field.annotation) if a is not type(None)]
    return typing.get_origin(field.annotation) in (typing.Union, types.UnionType) and len(members) > 1


def _details(e: dict, model: type) -> InitErrorDetails:
    loc = e["loc"]
    if e["type"] == "extra_forbidden":  # name the nested model's keys, not the outer one's
        kind = PydanticCustomError("unknown_key", "unknown key (valid keys: {keys})",
                                   {"keys": ", ".join(model.model_fields)})
        return InitErrorDetails(type=kind, loc=loc, input=e["input"])
    if e["type"] == "value_error":  # re-raised as-is: a custom error keeps the message
        kind = PydanticCustomError("value_error", "{message}", {"message": e["msg"].removeprefix("Value error, ")})
        return InitErrorDetails(type=kind, loc=loc, input=e["input"])
    return InitErrorDetails(type=e["type"], loc=loc, input=e["input"], ctx=e.get("ctx") or {})
