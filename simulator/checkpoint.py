"""Task-boundary checkpoints and the random state they must carry.

A checkpoint holds everything a run needs to continue as if it had never stopped: the
strategy's state (model, optimiser, memories, its own generator), the evaluation tensors and
timings so far, the index of the next task, and every global RNG state (Python, numpy, torch
CPU and CUDA). It is written atomically, so a kill leaves either the previous checkpoint or
the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from simulator.files import atomic_write

FORMAT_VERSION = 1


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states of Python, numpy, torch and (on a CUDA run) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global RNGs from ``seed`` inside the block and put
    the caller's states back afterwards, so a run neither depends on nor changes them."""
    saved = rng_state(device)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors, arrays and plain data) to ``path``."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors are loaded on the CPU)."""
    # Our own file with numpy arrays and RNG tuples inside: the full unpickler is needed.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format {payload.get('format')}, expected {FORMAT_VERSION}")
    return payload
