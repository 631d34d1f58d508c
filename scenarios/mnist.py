"""Streams from MNIST and Fashion-MNIST, read from the idx files under the data root.

- ``split-mnist`` / ``split-fashion-mnist``: the ten classes split into tasks of
  ``classes_per_task`` classes: class-incremental (one head over all ten), task-incremental
  (task id known, outputs masked to the task's classes), or few-shot (``ways``-way episodes
  within the task's classes, labels 0..ways-1 per episode, e.g. to follow Omniglot in a
  ``schedule`` as an out-of-distribution shift).
- ``permuted-mnist``: every task holds all ten digits under its own fixed pixel permutation
  (domain-incremental); GEM and MER use 20 tasks of 1000 training examples, the defaults.
- ``rotated-mnist``: every task holds all ten digits rotated by its own angle, evenly spaced
  from ``min_angle`` to ``max_angle`` or drawn uniformly from that range (as in MER).

Inputs are float32 in [0, 1] of shape (1, 28, 28). Training examples come from the official
60000-image training set and test pools from the 10000-image test set, so no test image is
ever a training image. Images stay uint8 in memory (:class:`~scenarios.base.ImagePool`), and
permutations and rotations are applied only to the examples drawn, so 20 permuted tasks cost
no more memory than one.

Example:
    >>> import scenarios
    >>> stream = scenarios.build("permuted-mnist", {"num_tasks": 3}, seed=0)  # doctest: +SKIP
    >>> len(stream), stream.spec.input_shape, len(stream[0].train)            # doctest: +SKIP
    (3, (1, 28, 28), 1000)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from scenarios.base import Family, ImagePool, Stream, StreamSpec, Task, class_split
from scenarios.data import load_mnist_like
from scenarios.digits import rotate
from scenarios.params import Params
from scenarios.rng import generator

NUM_CLASSES = 10
# the seeded draws of this family (see scenarios/rng.py)
_TRAIN_SUBSET_SALT, _TEST_SUBSET_SALT, _PERMUTATION_SALT, _ANGLE_SALT = 2, 3, 4, 5
INPUT_SHAPE = (1, 28, 28)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
DATA_ROOT_HELP = "folder holding mnist/ and fashion-mnist/ (default: $LIFELONG_DATA, else ./data)"


def load(dataset: str, train: bool, root: str | None) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of ``mnist`` or ``fashion-mnist``."""
    images, labels = load_mnist_like(dataset, train, root)
    return (torch.from_numpy(images.copy()).unsqueeze(1),  # copy: the decoded buffer is read-only
            torch.from_numpy(labels.astype("int64")))


def select(y: Tensor, classes: Tensor, per_class: int | None, gen: torch.Generator) -> Tensor:
    """Sorted indices of the examples whose label is in ``classes``; with ``per_class``, a
    seeded random ``per_class`` of them per class (all of a class if it has fewer)."""
    if per_class is None:
        return torch.nonzero(torch.isin(y, classes)).flatten()
    order = torch.randperm(len(y), generator=gen)
    picked = [order[y[order] == c][:per_class] for c in classes.tolist()]
    return torch.cat(picked).sort().values


class _MnistParams(Params):
    shots: int = Field(5, gt=0, description="support examples per class in an episode")
    query: int = Field(10, gt=0, description="query examples per class in an episode")
    data_root: str | None = Field(None, min_length=1, description=DATA_ROOT_HELP)


class SplitParams(_MnistParams):
    num_tasks: int = Field(5, gt=0, description="number of tasks T")
    classes_per_task: int = Field(2, gt=0, description="classes per task")
    protocol: Literal["class-incremental", "task-incremental", "few-shot"] = Field(
        "class-incremental", description="one head over all classes, masked to the task's classes, or N-way episodes")
    ways: int | None = Field(None, gt=1, description="few-shot only: classes per episode (default: classes_per_task)")
    shuffle_classes: bool = Field(False, description="assign classes to tasks in a seeded random order (else 0, 1, 2, ...)")
    train_per_class: int | None = Field(None, gt=0, description="training examples per class, seeded subset (default: all, ~6000)")
    test_per_class: int | None = Field(None, gt=0, description="test examples per class, seeded subset (default: all, ~1000)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.num_tasks * self.classes_per_task > NUM_CLASSES:
            raise ValueError(f"num_tasks * classes_per_task = {self.num_tasks * self.classes_per_task} "
                             f"exceeds the {NUM_CLASSES} classes")
        if self.ways is not None and self.protocol != "few-shot":
            raise ValueError("ways applies only to protocol = 'few-shot'")
        if self.protocol == "few-shot" and (self.ways or self.classes_per_task) > self.classes_per_task:
            raise ValueError(f"ways = {self.ways} exceeds classes_per_task = {self.classes_per_task}")
        if self.protocol == "few-shot" and self.classes_per_task < 2:
            raise ValueError("few-shot episodes need classes_per_task >= 2")
        return self


class _DomainParams(_MnistParams):
    num_tasks: int = Field(20, gt=0, description="number of tasks T")
    train_per_task: int | None = Field(1000, gt=0, description="training examples per task, a seeded random subset per task "
                                                              "(GEM/MER: 1000; None: all 60000)")
    test_per_task: int | None = Field(None, gt=0, description="test examples per task, a seeded random subset (default: all 10000)")


class PermutedParams(_DomainParams):
    pass


class RotatedParams(_DomainParams):
    min_angle: float = Field(0.0, ge=-360, le=360, description="rotation of the first task, in degrees")
    max_angle: float = Field(180.0, ge=-360, le=360, description="rotation of the last task, in degrees")
    random_angles: bool = Field(False, description="draw each task's angle uniformly in [min_angle, max_angle] from the seed (as MER)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_angle > self.max_angle:
            raise ValueError(f"min_angle {self.min_angle} is above max_angle {self.max_angle}")
        return self


def _class_names(dataset: str, labels: list[int]) -> str:
    if dataset == "fashion-mnist":
        return "fashion " + "+".join(FASHION_CLASSES[c] for c in labels)
    return "mnist " + "-".join(map(str, labels))


def _split_builder(dataset: str, family_name: str):
    def build(params: SplitParams, seed: int) -> Stream:
        xtr, ytr = load(dataset, True, params.data_root)
        xte, yte = load(dataset, False, params.data_root)
        few_shot = params.protocol == "few-shot"
        ways = (params.ways or params.classes_per_task) if few_shot else None
        output_size = ways if few_shot else NUM_CLASSES
        tasks = []
        for t, classes in enumerate(class_split(NUM_CLASSES, params.num_tasks, params.classes_per_task,
                                                params.shuffle_classes, seed)):
            tr = select(ytr, classes, params.train_per_class, generator(seed, _TRAIN_SUBSET_SALT, t))
            te = select(yte, classes, params.test_per_class, generator(seed, _TEST_SUBSET_SALT, t))
            labels = classes.tolist()
            tasks.append(Task(id=t, name=_class_names(dataset, labels), classes=tuple(labels),
                              train=ImagePool(xtr[tr], ytr[tr]), test=ImagePool(xte[te], yte[te]),
                              protocol=params.protocol, output_size=output_size, ways=ways))
        spec = StreamSpec(name=family_name, kind="classification", protocol=params.protocol,
                          input_shape=INPUT_SHAPE, output_size=output_size, num_tasks=params.num_tasks,
                          shots=params.shots, query=params.query, ways=ways)
        return Stream(spec, tuple(tasks))

    return build


def _subset(n: int, size: int | None, gen: torch.Generator) -> Tensor | None:
    """A sorted seeded random subset of ``size`` of ``range(n)``; None (everything) when size is
    None or not smaller than n."""
    if size is None or size >= n:
        return None
    return torch.randperm(n, generator=gen)[:size].sort().values


def _domain_stream(name: str, params: _DomainParams, seed: int, transforms: list, names: list[str]) -> Stream:
    xtr, ytr = load("mnist", True, params.data_root)
    xte, yte = load("mnist", False, params.data_root)
    te = _subset(len(yte), params.test_per_task, generator(seed, _TEST_SUBSET_SALT))
    # One test subset for every task: the tasks differ only by their transform.
    xte, yte = (xte, yte) if te is None else (xte[te], yte[te])
    every = tuple(range(NUM_CLASSES))
    tasks = []
    for t, f in enumerate(transforms):
        tr = _subset(len(ytr), params.train_per_task, generator(seed, _TRAIN_SUBSET_SALT, t))
        x, y = (xtr, ytr) if tr is None else (xtr[tr], ytr[tr])
        tasks.append(Task(id=t, name=names[t], classes=every, train=ImagePool(x, y, f),
                          test=ImagePool(xte, yte, f), protocol="domain-incremental", output_size=NUM_CLASSES))
    spec = StreamSpec(name=name, kind="classification", protocol="domain-incremental", input_shape=INPUT_SHAPE,
                      output_size=NUM_CLASSES, num_tasks=params.num_tasks, shots=params.shots, query=params.query)
    return Stream(spec, tuple(tasks))


def permute(perm: Tensor):
    """The transform applying the pixel permutation ``perm`` (of 784) to a batch (B, 1, 28, 28)."""
    return lambda x: x.reshape(len(x), -1)[:, perm].reshape(x.shape)


def build_permuted(params: PermutedParams, seed: int) -> Stream:
    perms = [torch.randperm(math.prod(INPUT_SHAPE), generator=generator(seed, _PERMUTATION_SALT, t)) for t in range(params.num_tasks)]
    return _domain_stream("permuted-mnist", params, seed, [permute(p) for p in perms],
                          [f"permutation {t}" for t in range(params.num_tasks)])


def build_rotated(params: RotatedParams, seed: int) -> Stream:
    lo, hi, T = params.min_angle, params.max_angle, params.num_tasks
    if params.random_angles:
        angles = (lo + (hi - lo) * torch.rand(T, generator=generator(seed, _ANGLE_SALT), dtype=torch.float64)).tolist()
    else:
        angles = [lo + t * (hi - lo) / max(T - 1, 1) for t in range(T)]
    return _domain_stream("rotated-mnist", params, seed, [rotation(a) for a in angles],
                          [f"rotation {a:.4g} deg" for a in angles])


def rotation(degrees: float):
    """The transform rotating a batch (B, 1, 28, 28) counter-clockwise by ``degrees``: exact for
    multiples of 90 (none at all for 0), bilinear otherwise."""
    if degrees % 90 == 0:
        k = int(degrees // 90) % 4
        return None if k == 0 else (lambda x: torch.rot90(x, k, dims=(-2, -1)))
    return lambda x: rotate(x, degrees)


SPLIT_MNIST = Family("split-mnist", SplitParams, _split_builder("mnist", "split-mnist"),
                     "MNIST split into tasks of a few digits (class-, task-incremental or few-shot)")
SPLIT_FASHION_MNIST = Family("split-fashion-mnist", SplitParams,
                             _split_builder("fashion-mnist", "split-fashion-mnist"),
                             "Fashion-MNIST split into tasks of a few classes (class-, task-incremental or few-shot)")
PERMUTED_MNIST = Family("permuted-mnist", PermutedParams, build_permuted,
                        "MNIST under a fixed pixel permutation per task (domain-incremental; GEM/MER: 20 x 1000)")
ROTATED_MNIST = Family("rotated-mnist", RotatedParams, build_rotated,
                       "MNIST rotated by a per-task angle (domain-incremental; GEM/MER: 20 x 1000)")
