"""``osaka``: OSAKA's online stream of switching, recurring and out-of-distribution few-shot tasks.

OSAKA (Caccia et al., "Online Fast Adaptation and Knowledge Accumulation", NeurIPS 2020)
first lets a meta-learner meta-train on a pre-training distribution, then plays a
never-ending stream of small batches that it must predict before it sees their labels:

- **Pre-training** (``stream.pretrain``): a few-shot task stream of one task over the Omniglot
  *background* characters (964, 30 alphabets), ``ways``-way episodes labelled 0..N-1; a seeded
  100 of these characters are its held-out test pool (meta-validation).
- **The stream**: ``length`` batches. A batch is ``shots`` distinct images of each of the current
  task's ``ways`` classes, shuffled, labelled 0..ways-1 by the task's own random assignment
  (its i-th drawn class is label i). Batch 0 starts a task; after it, the task switches with
  probability ``switch_prob`` per batch. At a switch the new task's pool is drawn from
  ``pools`` with ``pool_probs``: ``omniglot`` (the pre-training distribution, but held-out
  characters: the *evaluation* alphabets), ``mnist`` and ``fashion-mnist`` (out of
  distribution). The new task is a fresh draw of ``ways`` classes of that pool with a fresh
  label assignment (a new task id) or, with probability ``recur_prob``, an earlier task of
  that pool (the same classes, the same labels, the same id; see
  :func:`scenarios.online.switching`).
- **Columns** (the evaluator's fixed held-out episodes), one per pool, named after it:
  ``omniglot`` draws ``ways``-way episodes from a seeded ``held_out_fraction`` of the
  evaluation characters that the stream never shows; ``mnist`` and ``fashion-mnist`` from the
  official 10000-image test sets (the stream draws from the 60000 training images).

Images are 28x28, one channel, float32 in [0, 1] with bright strokes on a dark background for
every pool (Omniglot resized with Lanczos as MAML, see :mod:`scenarios.omniglot`).

Defaults follow the camera-ready configurations of the authors' code (github.com/ElementAI/osaka,
branch ``camera_ready``, ``Config/Best_params/omniglot_p*.json``): 10-way 5-shot batches,
10000 batches, ``prob_statio`` 0.9 (``switch_prob`` 0.1; the paper also reports 0.98, i.e.
``switch_prob = 0.02``), pools Omniglot / MNIST / Fashion-MNIST with probabilities
0.5 / 0.25 / 0.25.

**Where we differ from OSAKA's code** (``dataloaders.py``, ``StreamDataset``):

- Its Omniglot pool in the stream is the *whole* of Omniglot (all 1623 characters, meta-training
  ones included, in ``os.walk`` order), and its pre-training uses the first 900 characters of
  that order (drawers 0-9 support, 10-19 query) with the next 100 for validation. Here
  pre-training uses the background alphabets and the stream's Omniglot pool the evaluation
  alphabets, so "pre-training distribution" means new characters of the same kind, with no
  character ever both meta-trained on and met online.
- It draws each batch's images *with* replacement (a class's K shots may repeat an image);
  here they are distinct.
- It has no explicit recurrence: a switch always draws fresh classes (with MNIST's and
  Fashion-MNIST's ten classes every 10-way task has the same classes under a new labelling,
  which counts as a new task here too). ``recur_prob`` adds recurrence of a whole task
  (classes and labels); its default, 0, is OSAKA's behaviour.
- A switch may land in the same pool as before (as in OSAKA, where ``task_switch`` is 1 even
  then); here a switch is also always a new (or recurring, but different) task.
- Scaling: it feeds Omniglot in [0, 1] with dark strokes on white, and MNIST and
  Fashion-MNIST as raw 0-255 floats; here every pool is in [0, 1], strokes bright.
- Its evaluation is the online accuracy alone; the columns are ours, for the anytime tensor.

Example:
    >>> import scenarios
    >>> stream = scenarios.build("osaka", {"length": 100}, seed=0)     # doctest: +SKIP
    >>> b = stream.batch(0)                                            # doctest: +SKIP
    >>> tuple(b.x.shape), b.switch, stream.pools[b.pool]               # doctest: +SKIP
    ((50, 1, 28, 28), True, 'omniglot')
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor

from scenarios.base import ImagePool, ScenarioError, Stream, StreamSpec, Task
from scenarios.params import Params
from scenarios.rng import OSAKA_BATCHES, OSAKA_CLASSES, OSAKA_SPLIT, generator
from scenarios.data import Omniglot, load_omniglot
from scenarios.mnist import load
from scenarios.omniglot import DRAWERS, labelled_pool
from scenarios.online import BOUNDARIES_HELP, Boundaries, ByClass, OnlineFamily, OnlineStream, Switching, switching

POOLS = ("omniglot", "mnist", "fashion-mnist")
INPUT_SHAPE = (1, 28, 28)
MNIST_CLASSES = 10
PRETRAIN_HELD_OUT = 100  # background characters kept out of meta-training, as OSAKA's 100 validation classes


class OsakaParams(Params):
    ways: int = Field(10, gt=1, description="N: classes per task, labelled 0..N-1")
    shots: int = Field(5, gt=0, description="K: images of each class in a batch (and support shots of evaluation episodes)")
    query: int = Field(15, gt=0, description="query images per class in the evaluation episodes")
    length: int = Field(10000, gt=0, description="number of batches L")
    switch_prob: float = Field(0.1, ge=0, le=1, description="probability that the task switches after a batch "
                                                            "(OSAKA: 1 - prob_statio; the paper uses 0.1 and 0.02)")
    pools: list[str] = Field(list(POOLS), min_length=1, description=f"pools a new task is drawn from ({', '.join(POOLS)})")
    # Validated even when left out, so that changing pools alone is an error, not a silent mismatch.
    pool_probs: list[float] = Field([0.5, 0.25, 0.25], validate_default=True,
                                    description="probability of each pool at a switch")
    recur_prob: float = Field(0.0, ge=0, le=1, description="probability that a switch returns to an earlier task of "
                                                           "the pool drawn (OSAKA: 0)")
    held_out_fraction: float = Field(0.3, gt=0, lt=1, description="share of the evaluation alphabets' characters kept "
                                                                  "out of the stream for the omniglot column")
    boundaries: Boundaries = Field("hidden", description=BOUNDARIES_HELP)
    data_root: str | None = Field(None, min_length=1, description="folder holding omniglot/, mnist/ and fashion-mnist/ "
                                                                 "(default: $LIFELONG_DATA, else ./data)")

    @field_validator("pools")
    @classmethod
    def _known(cls, pools: list[str]) -> list[str]:
        unknown = [p for p in pools if p not in POOLS]
        if unknown:
            raise ValueError(f"unknown pool {unknown[0]!r} (valid: {', '.join(POOLS)})")
        if len(set(pools)) != len(pools):
            raise ValueError(f"must be distinct, got {pools}")
        return pools

    @field_validator("pool_probs")
    @classmethod
    def _distribution(cls, probs: list[float], info: ValidationInfo) -> list[float]:
        pools = info.data.get("pools")
        if pools is not None and len(probs) != len(pools):
            raise ValueError(f"has {len(probs)} entries but pools has {len(pools)}; give one probability per pool")
        if any(p < 0 for p in probs):
            raise ValueError(f"must be >= 0, got {probs}")
        if abs(sum(probs) - 1) > 1e-6:
            raise ValueError(f"must sum to 1, got {probs} (sum {sum(probs):.6g})")
        return probs

    @model_validator(mode="after")
    def _consistent(self):
        if self.ways > MNIST_CLASSES and {"mnist", "fashion-mnist"} & set(self.pools):
            raise ValueError(f"ways = {self.ways} exceeds the {MNIST_CLASSES} classes of MNIST and Fashion-MNIST")
        if self.shots + self.query > DRAWERS:
            # Omniglot's characters have 20 images: the pre-training episodes always need them.
            raise ValueError(f"shots + query = {self.shots + self.query} exceeds the {DRAWERS} images of an "
                             f"Omniglot character")
        return self


def task_classes(task: int, num_classes: int, ways: int, seed: int) -> Tensor:
    """Classes of task ``task`` (indices 0..num_classes-1 into its pool's sorted labels): the
    i-th is labelled i. A pure function of the task id, so a recurring task is the same task.

    Example:
        >>> task_classes(3, 10, 4, seed=0).tolist() == task_classes(3, 10, 4, seed=0).tolist()
        True
    """
    return torch.randperm(num_classes, generator=generator(seed, OSAKA_CLASSES, task))[:ways]


def _split(chars: np.ndarray, n_first: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random ``n_first`` of ``chars`` and the rest, each sorted."""
    order = torch.randperm(len(chars), generator=gen).numpy()
    return np.sort(chars[order[:n_first]]), np.sort(chars[order[n_first:]])


def _upright(chars: np.ndarray) -> np.ndarray:
    """Rotation 0 for each character: OSAKA uses no rotated classes."""
    return np.zeros(len(chars), dtype=np.int64)


def _omniglot_pools(om: Omniglot, fraction: float, seed: int) -> tuple[ImagePool, ImagePool]:
    """(stream pool, held-out pool) of the evaluation alphabets' characters, labelled apart."""
    chars = np.flatnonzero(~om.background)
    held, shown = _split(chars, math.ceil(fraction * len(chars)), generator(seed, OSAKA_SPLIT, 0))
    table = om.image_table()
    return (labelled_pool(om, table[shown], _upright(shown), 0),
            labelled_pool(om, table[held], _upright(held), len(shown)))


def _pools(params: OsakaParams, seed: int) -> list[tuple[ImagePool, ImagePool]]:
    """(stream pool, held-out pool) of each of ``params.pools``."""
    out = []
    for name in params.pools:
        if name == "omniglot":
            out.append(_omniglot_pools(load_omniglot(params.data_root), params.held_out_fraction, seed))
        else:
            out.append((ImagePool(*load(name, True, params.data_root)), ImagePool(*load(name, False, params.data_root))))
        for part, pool in zip(("stream", "held-out"), out[-1]):
            if len(pool.classes) < params.ways:
                raise ScenarioError(f"osaka: the {name} {part} pool has {len(pool.classes)} classes, fewer than "
                                    f"ways = {params.ways}; lower ways or change held_out_fraction")
    return out


def _pretrain(params: OsakaParams, seed: int, spec: StreamSpec) -> Stream:
    """One few-shot task over the background characters (a seeded 100 held out as its test pool)."""
    om = load_omniglot(params.data_root)
    held, train = _split(np.flatnonzero(om.background), PRETRAIN_HELD_OUT, generator(seed, OSAKA_SPLIT, 1))
    table = om.image_table()
    task = Task(id=0, name="omniglot background", classes=tuple(range(len(train) + len(held))),
                train=labelled_pool(om, table[train], _upright(train), 0),
                test=labelled_pool(om, table[held], _upright(held), len(train)),
                protocol="few-shot", output_size=params.ways, ways=params.ways)
    return Stream(dataclasses.replace(spec, num_tasks=1), (task,))


def _drawer(params: OsakaParams, seed: int, meta: Switching,
            columns: tuple[Task, ...]) -> Callable[[int], tuple[Tensor, Tensor]]:
    samplers = [ByClass(c.train) for c in columns]
    labels = torch.arange(params.ways).repeat_interleave(params.shots)

    def draw(t: int) -> tuple[Tensor, Tensor]:
        task, pool = int(meta.task[t]), int(meta.pool[t])
        classes = task_classes(task, samplers[pool].num_classes, params.ways, seed)
        gen = generator(seed, OSAKA_BATCHES, t)
        index = samplers[pool].draw(classes, params.shots, gen).flatten()  # class-major: label i's K images
        order = torch.randperm(len(index), generator=gen)
        source = columns[pool].train
        return source.to_float(source.x[index[order]]), labels[order]

    return draw


def build(params: OsakaParams, seed: int) -> OnlineStream:
    spec = StreamSpec(name="osaka", kind="classification", protocol="few-shot", input_shape=INPUT_SHAPE,
                      output_size=params.ways, num_tasks=len(params.pools), shots=params.shots,
                      query=params.query, ways=params.ways)
    columns = tuple(Task(id=j, name=name, classes=tuple(test.classes.tolist()), train=shown, test=test,
                         protocol="few-shot", output_size=params.ways, ways=params.ways)
                    for j, (name, (shown, test)) in enumerate(zip(params.pools, _pools(params, seed))))
    meta = switching(params.length, params.switch_prob, params.pool_probs, params.recur_prob, seed)
    return OnlineStream(spec, tuple(params.pools), params.boundaries, columns, meta,
                        _drawer(params, seed, meta, columns), pretrain=_pretrain(params, seed, spec))


OSAKA = OnlineFamily("osaka", OsakaParams, build,
                     "online: OSAKA's stream of N-way K-shot batches, tasks switching between Omniglot (after "
                     "pre-training on its background alphabets), MNIST and Fashion-MNIST")
