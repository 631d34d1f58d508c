"""Checkpoints that cannot run code, and the random state they must carry.

A checkpoint holds everything a run needs to continue as if it had never stopped: the
strategy's state (model, optimiser, memories, its own generator), the evaluation tensors and
timings so far, the index of the next task, where the strategy was inside the current task
(mid-task checkpoints), and every global RNG state (Python, numpy, torch CPU and CUDA).

The file is one header line of JSON followed by a ``torch.save`` payload::

    {"format": 2, "sha256": "<payload hash>", "identity": {"config_hash": ..., "label": ..., "seed": ...}}
    <payload>

and is trusted only as far as it is checked: the payload must hash to the header's value (a
truncated or damaged file is refused), the identity must be the run's own (a checkpoint of
another experiment, strategy or seed is refused), and the payload is read with
``torch.load(weights_only=True)``, which builds tensors and plain data only and never calls
code named in the file. Numpy arrays, which that loader refuses, are stored as tensors and
turned back. Every refusal is a :class:`CheckpointError` naming the file. Writes are atomic,
so a kill leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator.files import atomic_write

FORMAT_VERSION = 2
_ARRAY = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, foreign, of an old format): ``str(err)``
    names the file, says what is wrong and what to do."""


def _encode(value: Any) -> Any:
    """``value`` with numpy arrays and numbers replaced by what ``weights_only`` loading accepts."""
    if isinstance(value, np.ndarray):
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(v) for v in value]
        return encoded if isinstance(value, list) else tuple(encoded)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return value[_ARRAY].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        decoded = [_decode(v) for v in value]
        return decoded if isinstance(value, list) else tuple(decoded)
    return value


def save_checkpoint(path: Path, payload: dict[str, Any], identity: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors, arrays and plain data) for the run ``identity``."""
    buffer = io.BytesIO()
    torch.save(_encode(payload), buffer)
    body = buffer.getvalue()
    header = {"format": FORMAT_VERSION, "sha256": hashlib.sha256(body).hexdigest(), "identity": identity}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(header, sort_keys=True).encode() + b"\n" + body)


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The payload of the checkpoint at ``path``, written for the run ``identity``.

    Raises :class:`CheckpointError` when the file cannot be read, is not a checkpoint of this
    format, is damaged (its hash differs), belongs to another run, or holds anything but
    tensors and plain data. Tensors are loaded on the CPU.
    """
    advice = "delete it to restart that run from its beginning, or rerun with --overwrite"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({err.strerror or err})") from None
    line, _, body = data.partition(b"\n")
    try:
        header = json.loads(line)
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {path} is not a lifelong checkpoint of format {FORMAT_VERSION} "
                              f"(damaged, foreign, or written by an older version); {advice}") from None
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {header.get('format')!r}, this version reads "
                              f"{FORMAT_VERSION}; {advice}")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is damaged (its content does not match its hash: truncated "
                              f"or altered); {advice}")
    if header.get("identity") != identity:
        raise CheckpointError(f"checkpoint {path} belongs to another run ({header.get('identity')}, expected "
                              f"{identity}); {advice}")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} holds more than tensors and plain data and was not loaded, "
                              f"since loading it could run code ({first}); {advice}") from None
    return _decode(payload)
