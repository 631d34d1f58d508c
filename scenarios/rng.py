"""Randomness: seeded generators for independent streams of draws, the salts that keep them
apart, and the one way a block of code gets seeded global RNGs without leaking them.

Every random draw of a stream, a strategy or the evaluator comes from a ``torch.Generator``
of its own, made by :func:`generator` from the run's seed and integer *salts*. Two draws are
independent when their salt sequences differ. A family's own draws use its module's salts
(small integers, named in each module); the salts below are those of the streams that compose
or observe other streams (schedules, online streams, OSAKA, the evaluator), and they differ
from every family's, so that their draws never coincide with the draws of a stream they hold.

Code that draws from global state (Avalanche's loops, a model's initialisation) runs inside
:func:`isolated_rng`: Python's, numpy's and torch's global RNGs are seeded on entry and the
caller's states are put back on exit.

Example:
    >>> a = torch.rand(2, generator=generator(0, EVAL_EPISODES, 3))
    >>> torch.equal(a, torch.rand(2, generator=generator(0, EVAL_EPISODES, 3)))
    True
    >>> with isolated_rng(5):
    ...     b = torch.rand(1)
    >>> with isolated_rng(5):
    ...     torch.equal(b, torch.rand(1))
    True
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

EVAL_EPISODES = 7919
"""The evaluator's held-out episodes of each task (with the task id)."""
SCHEDULE_ORDER = 12
"""A schedule's seeded task order."""
SCHEDULE_PARTS = 13
"""The seed of each part of a schedule after the first (with the part's position)."""
ONLINE_SWITCHES = 30
"""The switching metadata of an online stream (switches, pools, recurrences)."""
OSAKA_SPLIT, OSAKA_CLASSES, OSAKA_BATCHES = 40, 41, 42
"""OSAKA: held-out characters, each task's classes, each batch's images."""
SWITCHING_TASKS, SWITCHING_BATCHES = 50, 51
"""The switching sinusoid: each task's function, each batch's inputs."""
ONLINE_ORDER = 60
"""The order in which an online stream plays a task's training examples."""


def generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``seed`` and optional integers, for independent
    deterministic random streams (e.g. one per task) without touching global state."""
    mixed = seed
    for s in salt:
        mixed = (mixed * 1_000_003 + s + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states of Python, numpy, torch and (on a CUDA device) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back global RNG states taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed Python's, numpy's and torch's global RNGs (and CUDA's on a CUDA ``device``) from
    ``seed`` inside the block, and put the caller's states back afterwards (even on error), so
    that the block neither depends on nor changes them. numpy takes ``seed`` modulo 2**32,
    the range it accepts; the others take it as it is."""
    saved = rng_state(torch.device(device))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        set_rng_state(saved)
