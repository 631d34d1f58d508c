"""Data model of a lifelong stream: episodes, example pools, tasks and streams.

A :class:`Stream` is an ordered list of :class:`Task` objects plus a :class:`StreamSpec`
(problem kind, protocol, input shape, output size). Every task holds a training source and a
held-out test source; a source draws batched :class:`Episodes` (support and query sets with a
leading episode dimension) from seeded ``torch.Generator`` objects only, never from global
random state, so a stream is a pure function of its parameters and seed.

Example:
    >>> import torch
    >>> from scenarios.base import LabelledPool
    >>> pool = LabelledPool(torch.randn(40, 3), torch.arange(4).repeat(10))
    >>> eps = pool.sample(8, shots=2, query=3, generator=torch.Generator().manual_seed(0))
    >>> tuple(eps.support_x.shape), tuple(eps.query_y.shape)
    ((8, 8, 3), (8, 12))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Protocol

import torch
from torch import Tensor

from scenarios.rng import generator


class ScenarioError(ValueError):
    """A stream that cannot be built for a reason the user can fix (missing or damaged data
    files, a user stream function that fails its contract); ``str(err)`` is one paragraph."""


Kind = Literal["classification", "regression"]
ProtocolName = Literal["class-incremental", "task-incremental", "domain-incremental", "few-shot"]
PROTOCOLS: tuple[str, ...] = ("class-incremental", "task-incremental", "domain-incremental", "few-shot")


@dataclass(frozen=True)
class Episodes:
    """A batch of episodes; every tensor has the episode dimension first.

    Attributes:
        support_x: (E, S, *input_shape) support inputs.
        support_y: (E, S) class labels, or (E, S, out) regression targets.
        query_x: (E, Q, *input_shape) query inputs, disjoint from the support set.
        query_y: (E, Q) or (E, Q, out) query targets.
        mask: optional (out,) boolean tensor of the outputs a prediction may use (the task's
            classes under the task-incremental protocol); ``None`` means every output.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    mask: Tensor | None = None

    def __len__(self) -> int:
        return self.support_x.shape[0]

    @property
    def support(self) -> "Support":
        """The support sets alone: all that a strategy's ``adapt`` may see."""
        return Support(self.support_x, self.support_y, self.mask)

    def to(self, device: torch.device | str) -> "Episodes":
        """Return the same episodes with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Episodes(*(move(getattr(self, f.name)) for f in dataclasses.fields(self)))

    def slice(self, start: int, stop: int) -> "Episodes":
        """Episodes ``start:stop`` (the mask is shared)."""
        return Episodes(self.support_x[start:stop], self.support_y[start:stop],
                        self.query_x[start:stop], self.query_y[start:stop], self.mask)


@dataclass(frozen=True)
class Support:
    """Support sets of a batch of episodes: x (E, S, *input_shape), y (E, S[, out]), mask."""

    x: Tensor
    y: Tensor
    mask: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


class Source(Protocol):
    """What a task's training or test data must offer."""

    def sample(self, n_episodes: int, shots: int, query: int, generator: torch.Generator,
               ways: int | None = None, relabel: bool = False) -> Episodes:
        """Draw ``n_episodes`` episodes of ``shots`` support and ``query`` query items."""

    def examples(self) -> tuple[Tensor, Tensor]:
        """Every example of the source as flat ``(x, y)`` tensors, for plain training."""

    def __len__(self) -> int:
        """Number of examples."""


def _first_k_random(valid: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Per row of the boolean matrix ``valid`` (R, N), ``k`` distinct random column indices
    among the valid ones, uniformly, in one vectorised draw (random keys, invalid ones last)."""
    keys = torch.rand(valid.shape, generator=generator)
    keys = keys.masked_fill(~valid, 2.0)
    return keys.argsort(dim=1)[:, :k]


class LabelledPool:
    """Labelled classification examples that draw N-way episodes with K shots per class.

    Each episode takes ``ways`` classes (all of the pool's classes by default) and, for each,
    ``shots`` support and ``query`` query examples, all distinct. Labels stay global unless
    ``relabel`` is set (few-shot protocol), in which case the i-th class drawn becomes label i.

    Args:
        x: (N, *input_shape) inputs.
        y: (N,) integer labels.
    """

    def __init__(self, x: Tensor, y: Tensor):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
        self.x, self.y = x, y.long()
        self.classes, inverse, self.counts = torch.unique(self.y, return_inverse=True, return_counts=True)
        # Padded (C, max_count) index table so that drawing is one vectorised operation. Built
        # by one stable sort (a loop over classes takes seconds for Omniglot's 4800 classes);
        # row c lists the examples of class c in increasing order.
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        rank = torch.arange(len(order)) - starts[inverse[order]]
        width = int(self.counts.max()) if len(self.counts) else 0
        self._index = torch.zeros(len(self.classes), width, dtype=torch.long)
        self._index[inverse[order], rank] = order

    def __len__(self) -> int:
        return self.x.shape[0]

    def examples(self) -> tuple[Tensor, Tensor]:
        return self.x, self.y

    def shift_labels(self, offset: int) -> "LabelledPool":
        """The same pool (same type, inputs shared, not copied) with every label plus ``offset``."""
        twin = copy.copy(self)
        twin.y, twin.classes = self.y + offset, self.classes + offset
        return twin

    def sample(self, n_episodes: int, shots: int, query: int, generator: torch.Generator,
               ways: int | None = None, relabel: bool = False) -> Episodes:
        n_classes = len(self.classes)
        ways = n_classes if ways is None else ways
        if ways > n_classes:
            raise ValueError(f"{ways}-way episodes need {ways} classes; the pool has {n_classes}")
        per_class = shots + query
        short = self.counts < per_class
        if bool(short.any()):
            c = int(self.classes[short][0])
            raise ValueError(
                f"class {c} has {int(self.counts[short][0])} examples; an episode needs "
                f"{per_class} per class ({shots} support + {query} query)")
        if ways == n_classes:
            chosen = torch.arange(n_classes).expand(n_episodes, n_classes)
        else:
            chosen = _first_k_random(torch.ones(n_episodes, n_classes, dtype=torch.bool), ways,
                                     generator)
        positions = torch.arange(self._index.shape[1])
        valid = positions < self.counts[chosen].unsqueeze(-1)              # (E, W, max)
        pick = _first_k_random(valid.reshape(-1, valid.shape[-1]), per_class, generator)
        rows = self._index[chosen].reshape(-1, self._index.shape[1])
        idx = rows.gather(1, pick).reshape(n_episodes, ways, per_class)    # (E, W, S+Q)
        labels = (torch.arange(ways).expand(n_episodes, ways) if relabel
                  else self.classes[chosen])
        labels = labels.unsqueeze(-1).expand(n_episodes, ways, per_class)

        def take(part: slice) -> tuple[Tensor, Tensor]:
            flat = idx[:, :, part].reshape(n_episodes, -1)
            return (self.x[flat], labels[:, :, part].reshape(n_episodes, -1))

        sx, sy = take(slice(0, shots))
        qx, qy = take(slice(shots, per_class))
        return Episodes(sx, sy, qx, qy)


class ImagePool(LabelledPool):
    """A :class:`LabelledPool` of 8-bit images, stored as uint8 and handed out as float.

    Storing bytes takes a quarter of the memory of float32 (MNIST's 60000 training images:
    47 MB instead of 188 MB) and lets many tasks share one array. Inputs leave the pool as
    float32 in [0, 1], passed through ``transform`` (a pixel permutation, a rotation) when one
    is given, so a domain-incremental task costs no copy of the images: only the examples
    drawn or returned are converted.

    Args:
        x: (N, *input_shape) uint8 images.
        y: (N,) integer labels.
        transform: optional function of a float batch (B, *input_shape) returning a batch of
            the same shape; it must be deterministic.

    Example:
        >>> import torch
        >>> pool = ImagePool(torch.full((4, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
        >>> x, y = pool.examples()
        >>> x.dtype, float(x.max())
        (torch.float32, 1.0)
    """

    def __init__(self, x: Tensor, y: Tensor, transform: Callable[[Tensor], Tensor] | None = None):
        if x.dtype != torch.uint8:
            raise ValueError(f"ImagePool stores uint8 images; got {x.dtype} (use LabelledPool for float inputs)")
        super().__init__(x, y)
        self.transform = transform

    def to_float(self, x: Tensor) -> Tensor:
        """uint8 images of any leading shape as float32 in [0, 1], transformed."""
        lead = x.shape[: x.dim() - (self.x.dim() - 1)]
        flat = x.reshape(-1, *self.x.shape[1:]).float().div_(255)
        if self.transform is not None and len(flat):  # the transforms need not accept an empty batch
            flat = self.transform(flat)
        return flat.reshape(*lead, *flat.shape[1:])

    def examples(self) -> tuple[Tensor, Tensor]:
        return self.to_float(self.x), self.y

    def sample(self, n_episodes: int, shots: int, query: int, generator: torch.Generator,
               ways: int | None = None, relabel: bool = False) -> Episodes:
        eps = super().sample(n_episodes, shots, query, generator, ways=ways, relabel=relabel)
        return dataclasses.replace(eps, support_x=self.to_float(eps.support_x),
                                   query_x=self.to_float(eps.query_x))


class GroupedPool:
    """Regression examples grouped by function: group g holds points ``x[g], y[g]``.

    An episode is one group with ``shots`` support and ``query`` query points, all distinct.

    Args:
        x: (G, P, in_dim) inputs.
        y: (G, P, out_dim) targets.
    """

    def __init__(self, x: Tensor, y: Tensor):
        if x.shape[:2] != y.shape[:2]:
            raise ValueError(f"x groups {tuple(x.shape[:2])} differ from y groups {tuple(y.shape[:2])}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0] * self.x.shape[1]

    def examples(self) -> tuple[Tensor, Tensor]:
        return self.x.reshape(-1, *self.x.shape[2:]), self.y.reshape(-1, *self.y.shape[2:])

    def sample(self, n_episodes: int, shots: int, query: int, generator: torch.Generator,
               ways: int | None = None, relabel: bool = False) -> Episodes:
        groups, points = self.x.shape[:2]
        if shots + query > points:
            raise ValueError(f"an episode needs {shots + query} points; a group has {points}")
        group = torch.randint(groups, (n_episodes,), generator=generator)
        pick = _first_k_random(torch.ones(n_episodes, points, dtype=torch.bool), shots + query,
                               generator)
        g = group.unsqueeze(1)
        x, y = self.x[g, pick], self.y[g, pick]
        return Episodes(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


@dataclass(frozen=True)
class StreamSpec:
    """What a strategy may know about a stream before it starts.

    Attributes:
        name: the family's registered name.
        kind: ``classification`` or ``regression``.
        protocol: one of :data:`PROTOCOLS`.
        input_shape: shape of one input.
        output_size: classes of the head (classification) or target dimension (regression).
        num_tasks: number of tasks T.
        shots: default support items per class (per episode for regression).
        query: default query items per class (per episode for regression).
        ways: classes per episode under the few-shot protocol (``None`` otherwise).
    """

    name: str
    kind: Kind
    protocol: ProtocolName
    input_shape: tuple[int, ...]
    output_size: int
    num_tasks: int
    shots: int
    query: int
    ways: int | None = None


@dataclass(frozen=True)
class Task:
    """One stage of the stream.

    Attributes:
        id: position of the task's column in the evaluation tensor (a recurring task keeps its id).
        name: readable name, e.g. ``"digits 0-1"``.
        classes: global labels of the task (empty for regression).
        train: the training source; the only data a strategy's ``learn`` sees.
        test: the held-out test source; ``None`` in the view handed to strategies.
        protocol: the stream's protocol, which decides labels and masking of episodes.
        ways: classes per episode under the few-shot protocol.
        output_size: size of the model's output, for the task-incremental mask.
    """

    id: int
    name: str
    classes: tuple[int, ...]
    train: Source
    test: Source | None
    protocol: ProtocolName
    output_size: int
    ways: int | None = None

    @property
    def mask(self) -> Tensor | None:
        """(output_size,) boolean mask of the task's classes under task-incremental, else None."""
        if self.protocol != "task-incremental":
            return None
        mask = torch.zeros(self.output_size, dtype=torch.bool)
        mask[list(self.classes)] = True
        return mask

    def episodes(self, split: Literal["train", "test"], n_episodes: int, shots: int, query: int,
                 generator: torch.Generator) -> Episodes:
        """Draw episodes from the train or test source, labelled as the protocol requires."""
        source = self.train if split == "train" else self.test
        if source is None:
            raise ValueError(f"task {self.name!r} has no {split} data in this view")
        few_shot = self.protocol == "few-shot"
        eps = source.sample(n_episodes, shots, query, generator,
                            ways=self.ways if few_shot else None, relabel=few_shot)
        return dataclasses.replace(eps, mask=self.mask)

    def training_view(self) -> "Task":
        """The task as a strategy may see it: the same task without its test data."""
        return dataclasses.replace(self, test=None)


@dataclass(frozen=True)
class Stream:
    """The ordered tasks of a scenario and its spec. Iterating yields the tasks in order."""

    spec: StreamSpec
    tasks: tuple[Task, ...]

    def __post_init__(self):
        if len(self.tasks) == 0:
            raise ValueError("a stream needs at least one task")

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    @property
    def num_columns(self) -> int:
        """Distinct task ids: the width of the evaluation tensor."""
        return len({t.id for t in self.tasks})


_CLASS_ORDER_SALT = 1


def class_split(num_classes: int, num_tasks: int, classes_per_task: int, shuffle: bool, seed: int) -> list[Tensor]:
    """Each task's classes (sorted) when ``num_classes`` classes are dealt out
    ``classes_per_task`` at a time, in the order 0, 1, 2, ... or, with ``shuffle``, in an order
    drawn from ``seed``: the class-incremental splits of the digits and MNIST families.

    Example:
        >>> [c.tolist() for c in class_split(6, 3, 2, shuffle=False, seed=0)]
        [[0, 1], [2, 3], [4, 5]]
    """
    order = (torch.randperm(num_classes, generator=generator(seed, _CLASS_ORDER_SALT)) if shuffle
             else torch.arange(num_classes))
    return [order[t * classes_per_task:(t + 1) * classes_per_task].sort().values for t in range(num_tasks)]


@dataclass(frozen=True)
class Family:
    """A registered stream family: a pydantic parameter model and a builder.

    ``build(params, seed)`` must return a :class:`Stream` that depends only on its arguments.
    ``version`` counts the changes that made the same parameters and seed build other data; above
    1 it enters the resolved experiment (``stream_version``), so that a run directory or checkpoint
    written with an older version is refused instead of resumed on different tasks.
    """

    name: str
    params: type
    build: Callable[[Any, int], Stream]
    description: str
    version: int = 1
