"""Streams from scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

- ``split-digits``: the ten digits split into tasks of ``classes_per_task`` classes, as
  class-incremental (one head over all digits) or task-incremental (task id known, outputs
  masked to the task's classes).
- ``permuted-digits``: every task holds all ten digits under its own fixed pixel permutation
  (domain-incremental).
- ``rotated-digits``: every task holds all ten digits rotated by its own angle, evenly spaced
  from 0 to ``max_angle`` degrees (domain-incremental).

Images are scaled to [0, 1] with shape (1, 8, 8). The train/test split is stratified per class
and drawn from the seed; in the domain-incremental families the same split is used for every
task, so no test image is ever a training image of another task.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from scenarios.base import Family, LabelledPool, Stream, StreamSpec, Task, class_split
from scenarios.params import Params
from scenarios.rng import generator

NUM_CLASSES = 10
_SPLIT_SALT, _PERMUTATION_SALT = 0, 2  # the seeded draws of this family (see scenarios/rng.py)


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``(x, y)``: x float32 (N, 1, 8, 8) in [0, 1], y int64 (N,)."""
    from sklearn.datasets import load_digits as sklearn_load_digits  # heavy import: only here

    data = sklearn_load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return x, torch.tensor(data.target, dtype=torch.long)


def stratified_split(y: Tensor, test_fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices (train, test): per class, a random ``test_fraction`` (rounded up) goes to test."""
    order = torch.randperm(len(y), generator=gen)
    train, test = [], []
    for c in torch.unique(y):
        members = order[y[order] == c]
        n_test = math.ceil(test_fraction * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


class _DigitsParams(Params):
    num_tasks: int = Field(5, gt=0, description="number of tasks T")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="share of each class held out for testing")
    shots: int = Field(5, gt=0, description="support examples per class in an episode")
    query: int = Field(10, gt=0, description="query examples per class in an episode")


class SplitDigitsParams(_DigitsParams):
    classes_per_task: int = Field(2, gt=0, description="digits per task")
    protocol: Literal["class-incremental", "task-incremental"] = Field(
        "class-incremental", description="one head over all digits, or masked to the task's digits")
    shuffle_classes: bool = Field(False, description="assign digits to tasks in a seeded random order (else 0, 1, 2, ...)")

    @model_validator(mode="after")
    def _enough_classes(self):
        if self.num_tasks * self.classes_per_task > NUM_CLASSES:
            raise ValueError(f"num_tasks * classes_per_task = {self.num_tasks * self.classes_per_task} "
                             f"exceeds the {NUM_CLASSES} digit classes")
        return self


class PermutedDigitsParams(_DigitsParams):
    pass


class RotatedDigitsParams(_DigitsParams):
    max_angle: float = Field(180.0, ge=0, le=360, description="rotation of the last task, in degrees")


def _split_pools(params: _DigitsParams, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = load_digits()
    train, test = stratified_split(y, params.test_fraction, generator(seed, _SPLIT_SALT))
    return x[train], y[train], x[test], y[test]


def _spec(name: str, params: _DigitsParams, protocol: str) -> StreamSpec:
    return StreamSpec(name=name, kind="classification", protocol=protocol, input_shape=(1, 8, 8),
                      output_size=NUM_CLASSES, num_tasks=params.num_tasks, shots=params.shots,
                      query=params.query)


def build_split(params: SplitDigitsParams, seed: int) -> Stream:
    xtr, ytr, xte, yte = _split_pools(params, seed)
    tasks = []
    for t, classes in enumerate(class_split(NUM_CLASSES, params.num_tasks, params.classes_per_task,
                                            params.shuffle_classes, seed)):
        in_train, in_test = torch.isin(ytr, classes), torch.isin(yte, classes)
        labels = tuple(sorted(int(c) for c in classes))
        tasks.append(Task(id=t, name="digits " + "-".join(map(str, labels)), classes=labels,
                          train=LabelledPool(xtr[in_train], ytr[in_train]),
                          test=LabelledPool(xte[in_test], yte[in_test]),
                          protocol=params.protocol, output_size=NUM_CLASSES))
    return Stream(_spec("split-digits", params, params.protocol), tuple(tasks))


def _domain_stream(name: str, params: _DigitsParams, seed: int, transforms: list,
                   names: list[str]) -> Stream:
    xtr, ytr, xte, yte = _split_pools(params, seed)
    every = tuple(range(NUM_CLASSES))
    tasks = tuple(
        Task(id=t, name=names[t], classes=every, train=LabelledPool(f(xtr), ytr),
             test=LabelledPool(f(xte), yte), protocol="domain-incremental", output_size=NUM_CLASSES)
        for t, f in enumerate(transforms))
    return Stream(_spec(name, params, "domain-incremental"), tasks)


def build_permuted(params: PermutedDigitsParams, seed: int) -> Stream:
    perms = [torch.randperm(64, generator=generator(seed, _PERMUTATION_SALT, t)) for t in range(params.num_tasks)]
    transforms = [lambda x, p=p: x.reshape(len(x), -1)[:, p].reshape(x.shape) for p in perms]
    return _domain_stream("permuted-digits", params, seed, transforms,
                          [f"permutation {t}" for t in range(params.num_tasks)])


def rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotate a batch of images (N, C, H, W) counter-clockwise about their centre (bilinear)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                         dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def build_rotated(params: RotatedDigitsParams, seed: int) -> Stream:
    step = params.max_angle / max(params.num_tasks - 1, 1)
    angles = [t * step for t in range(params.num_tasks)]
    return _domain_stream("rotated-digits", params, seed,
                          [lambda x, a=a: rotate(x, a) for a in angles],
                          [f"rotation {a:g} deg" for a in angles])


SPLIT_DIGITS = Family("split-digits", SplitDigitsParams, build_split,
                      "8x8 digits split into tasks of a few classes (class- or task-incremental)")
PERMUTED_DIGITS = Family("permuted-digits", PermutedDigitsParams, build_permuted,
                         "8x8 digits under a fixed pixel permutation per task (domain-incremental)")
ROTATED_DIGITS = Family("rotated-digits", RotatedDigitsParams, build_rotated,
                        "8x8 digits rotated by a per-task angle (domain-incremental)")
