"""Few-shot streams from Omniglot: 1623 handwritten characters of 50 alphabets, 20 drawers each.

Images are resized to 28x28 (Lanczos, as in MAML's preprocessing) with bright strokes on a
dark background, float32 in [0, 1] of shape (1, 28, 28). A rotation by 90, 180 or 270
degrees, where enabled, makes a new class (Santoro et al., Vinyals et al.). Both families use
the few-shot protocol: ``ways``-way episodes with ``shots`` support and ``query`` query images
per class, labelled 0..ways-1 within each episode.

- ``omniglot-fewshot``: the standard benchmark as one task. Meta-training on the characters
  of the Vinyals et al. split (``trainval``: 1200 characters, x4 rotations = 4800 classes;
  or ``train``: 1028), evaluation on the held-out ``test`` characters (423, x4 = 1692
  classes) or ``val`` (172). Published figures (REFERENCE.md) use trainval -> test.
- ``omniglot-alphabets``: a lifelong stream in which each task is one or more alphabets,
  arriving in sequence. Episodes are drawn within the task's characters; each task has its
  own held-out test pool: a seeded ``test_fraction`` of each alphabet's characters
  (``holdout = "characters"``: new characters of the same alphabets) or of each character's
  drawers (``holdout = "drawers"``: new drawings of the same characters).

Example:
    >>> import scenarios
    >>> stream = scenarios.build("omniglot-alphabets", {"num_tasks": 3}, seed=0)  # doctest: +SKIP
    >>> [t.name for t in stream], stream.spec.ways                                # doctest: +SKIP
    (['Alphabet_of_the_Magi', 'Anglo-Saxon_Futhorc', 'Arcadian'], 5)
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from scenarios.base import Family, ImagePool, ScenarioError, Stream, StreamSpec, Task
from scenarios.data import OMNIGLOT_SIZE, DataError, Omniglot, load_omniglot, read_vinyals_split
from scenarios.params import Params
from scenarios.rng import generator

DRAWERS = 20
# the seeded draws of this family (see scenarios/rng.py)
_ALPHABET_ORDER_SALT, _CHARACTER_ORDER_SALT, _DRAWER_ORDER_SALT = 1, 2, 3
INPUT_SHAPE = (1, OMNIGLOT_SIZE, OMNIGLOT_SIZE)
DATA_ROOT_HELP = "folder holding omniglot/ (default: $LIFELONG_DATA, else ./data)"
NUM_ALPHABETS = {"background": 30, "evaluation": 20, "all": 50}


class _OmniglotParams(Params):
    ways: int = Field(5, gt=1, description="N: classes per episode")
    shots: int = Field(1, gt=0, description="K: support images per class in an episode")
    data_root: str | None = Field(None, min_length=1, description=DATA_ROOT_HELP)


class FewShotParams(_OmniglotParams):
    query: int = Field(15, gt=0, description="query images per class in an episode")
    train_split: Literal["train", "trainval"] = Field("trainval", description="Vinyals split meta-trained on")
    test_split: Literal["test", "val"] = Field("test", description="Vinyals split of held-out characters evaluated on")
    rotations: bool = Field(True, description="rotations by 90/180/270 degrees as new classes (else upright only)")

    @model_validator(mode="after")
    def _fits(self):
        if self.shots + self.query > DRAWERS:
            raise ValueError(f"shots + query = {self.shots + self.query} exceeds the {DRAWERS} images per class")
        return self


class AlphabetsParams(_OmniglotParams):
    query: int = Field(10, gt=0, description="query images per class in an episode")
    alphabets: Literal["background", "evaluation", "all"] = Field(
        "background", description="alphabet set: background (30), evaluation (20) or all (50)")
    num_tasks: int = Field(5, gt=0, description="number of tasks T")
    alphabets_per_task: int = Field(1, gt=0, description="alphabets making up one task")
    shuffle_alphabets: bool = Field(False, description="order the alphabets from the seed (else alphabetically)")
    holdout: Literal["characters", "drawers"] = Field(
        "characters", description="test pool: held-out characters of each alphabet, or held-out drawers of each character")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="share of characters (or drawers) held out, rounded up")
    rotations: bool = Field(False, description="rotations by 90/180/270 degrees as new classes")

    @model_validator(mode="after")
    def _fits(self):
        available = NUM_ALPHABETS[self.alphabets]
        if self.num_tasks * self.alphabets_per_task > available:
            raise ValueError(f"num_tasks * alphabets_per_task = {self.num_tasks * self.alphabets_per_task} exceeds "
                             f"the {available} alphabets of the {self.alphabets!r} set")
        test_drawers = math.ceil(self.test_fraction * DRAWERS)
        if self.holdout == "drawers" and self.shots + self.query > test_drawers:
            raise ValueError(f"shots + query = {self.shots + self.query} exceeds the {test_drawers} held-out drawers "
                             f"per class (raise test_fraction or use holdout = 'characters')")
        if self.holdout == "drawers" and test_drawers >= DRAWERS:
            raise ValueError("test_fraction leaves no training drawers")
        if self.shots + self.query > DRAWERS:
            raise ValueError(f"shots + query = {self.shots + self.query} exceeds the {DRAWERS} images per class")
        return self


def class_images(om: Omniglot, index: np.ndarray, degrees: np.ndarray) -> Tensor:
    """Images of L classes: ``index`` (L, d) image indices, ``degrees`` (L,) rotation of each
    class (counter-clockwise, multiples of 90). Returns (L * d, 1, 28, 28) uint8, class-major."""
    x = torch.from_numpy(om.images[index])  # fancy indexing copies, so rotating in place is safe
    for k in (1, 2, 3):
        rows = torch.from_numpy(degrees == 90 * k)
        if bool(rows.any()):
            x[rows] = torch.rot90(x[rows], k, dims=(-2, -1))
    return x.reshape(-1, *INPUT_SHAPE)


def labelled_pool(om: Omniglot, index: np.ndarray, degrees: np.ndarray, first_label: int) -> ImagePool:
    """An :class:`ImagePool` of L classes labelled ``first_label`` .. ``first_label + L - 1``."""
    labels = torch.arange(first_label, first_label + len(index)).repeat_interleave(index.shape[1])
    return ImagePool(class_images(om, index, degrees), labels)


def _split_classes(om: Omniglot, split: str, rotations: bool, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Character indices and rotations of the classes of a Vinyals split file."""
    where = {name: i for i, name in enumerate(om.characters)}
    pairs = [(c, d) for c, d in read_vinyals_split(split, root) if rotations or d == 0]
    missing = sorted({c for c, _ in pairs if c not in where})
    if missing:
        raise DataError(f"the Vinyals split {split!r} names {len(missing)} characters absent from the Omniglot zips "
                        f"(e.g. {missing[0]}); the split files and the zips do not belong together")
    return np.array([where[c] for c, _ in pairs]), np.array([d for _, d in pairs])


def build_fewshot(params: FewShotParams, seed: int) -> Stream:
    om = load_omniglot(params.data_root)
    table = om.image_table()
    tr_chars, tr_deg = _split_classes(om, params.train_split, params.rotations, params.data_root)
    te_chars, te_deg = _split_classes(om, params.test_split, params.rotations, params.data_root)
    train = labelled_pool(om, table[tr_chars], tr_deg, 0)
    test = labelled_pool(om, table[te_chars], te_deg, len(tr_chars))
    task = Task(id=0, name=f"omniglot {params.train_split} -> {params.test_split}",
                classes=tuple(range(len(tr_chars) + len(te_chars))), train=train, test=test,
                protocol="few-shot", output_size=params.ways, ways=params.ways)
    spec = StreamSpec(name="omniglot-fewshot", kind="classification", protocol="few-shot", input_shape=INPUT_SHAPE,
                      output_size=params.ways, num_tasks=1, shots=params.shots, query=params.query, ways=params.ways)
    return Stream(spec, (task,))


def build_alphabets(params: AlphabetsParams, seed: int) -> Stream:
    om = load_omniglot(params.data_root)
    table = om.image_table()
    every = om.alphabets("all")
    names = om.alphabets(params.alphabets)
    if params.shuffle_alphabets:
        names = [names[i] for i in torch.randperm(len(names), generator=generator(seed, _ALPHABET_ORDER_SALT)).tolist()]
    alphabet_of = np.array([c.split("/")[0] for c in om.characters])
    # Held-out drawers are drawn once per character, so a character's split does not depend on
    # which task it lands in.
    drawer_order = torch.rand(len(om.characters), DRAWERS, generator=generator(seed, _DRAWER_ORDER_SALT)).argsort(1).numpy()
    n_test_drawers = math.ceil(params.test_fraction * DRAWERS)
    degrees = np.array([0, 90, 180, 270] if params.rotations else [0])

    def with_rotations(chars: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(rows, len(degrees), axis=0), np.tile(degrees, len(chars))

    tasks, next_label = [], 0
    for t in range(params.num_tasks):
        chosen = names[t * params.alphabets_per_task:(t + 1) * params.alphabets_per_task]
        train_chars, test_chars = [], []
        for a in chosen:
            chars = np.flatnonzero(alphabet_of == a)
            if params.holdout == "characters":
                order = torch.randperm(len(chars), generator=generator(seed, _CHARACTER_ORDER_SALT, every.index(a))).numpy()
                n_test = math.ceil(params.test_fraction * len(chars))
                test_chars.append(np.sort(chars[order[:n_test]]))
                train_chars.append(np.sort(chars[order[n_test:]]))
            else:
                train_chars.append(chars)
        train_chars = np.concatenate(train_chars)
        if params.holdout == "characters":
            test_chars = np.concatenate(test_chars)
            train_rows, test_rows = table[train_chars], table[test_chars]
        else:
            test_chars = train_chars
            drawers = drawer_order[train_chars]
            test_rows = np.take_along_axis(table[train_chars], np.sort(drawers[:, :n_test_drawers], 1), 1)
            train_rows = np.take_along_axis(table[train_chars], np.sort(drawers[:, n_test_drawers:], 1), 1)
        name = "+".join(chosen)
        for part, chars in (("training", train_chars), ("held-out", test_chars)):
            if len(chars) * len(degrees) < params.ways:
                raise ScenarioError(
                    f"omniglot-alphabets task {t} ({name}) has {len(chars) * len(degrees)} {part} classes, fewer than "
                    f"ways = {params.ways}; raise alphabets_per_task, set rotations = true, or change test_fraction")
        train = labelled_pool(om, *with_rotations(train_chars, train_rows), next_label)
        next_label += len(train_chars) * len(degrees)
        if params.holdout == "drawers":  # the same classes, other drawings: the same labels
            test = labelled_pool(om, *with_rotations(test_chars, test_rows), next_label - len(train_chars) * len(degrees))
        else:
            test = labelled_pool(om, *with_rotations(test_chars, test_rows), next_label)
            next_label += len(test_chars) * len(degrees)
        labels = torch.cat([train.classes, test.classes]).unique().tolist()
        tasks.append(Task(id=t, name=name, classes=tuple(labels), train=train, test=test,
                          protocol="few-shot", output_size=params.ways, ways=params.ways))
    spec = StreamSpec(name="omniglot-alphabets", kind="classification", protocol="few-shot", input_shape=INPUT_SHAPE,
                      output_size=params.ways, num_tasks=params.num_tasks, shots=params.shots, query=params.query,
                      ways=params.ways)
    return Stream(spec, tuple(tasks))


OMNIGLOT_FEWSHOT = Family("omniglot-fewshot", FewShotParams, build_fewshot,
                          "Omniglot N-way K-shot: meta-train on the Vinyals training characters, test on held-out ones")
OMNIGLOT_ALPHABETS = Family("omniglot-alphabets", AlphabetsParams, build_alphabets,
                            "Omniglot alphabets arriving in sequence, N-way K-shot episodes within each task")
