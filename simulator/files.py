"""File helpers shared by every writer (run directories, checkpoints, sweeps, reports).

Atomic writes (a reader, a kill or a full disk never leaves a half-written file) and the
conversion to plain JSON data. Kept free of torch so that ``lifelong report`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class UnreadableFile(ValueError):
    """A file that exists but cannot be read or parsed: ``str(err)`` is ``"<path>: <reason>"``,
    and ``reason`` alone lets a caller word its own message."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def read_json(path: Path) -> Any:
    """The JSON value in ``path``: the one reader of a run directory's JSON files.

    Raises ``FileNotFoundError`` when it does not exist (callers say what that means) and
    :class:`UnreadableFile` when it cannot be read, is not UTF-8 or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UnreadableFile(path, f"cannot be read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnreadableFile(path, f"not valid JSON ({err})") from None


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, never unpickled (a crafted file cannot run
    code): the one reader of a run directory's ``tensors.npz``.

    Raises ``FileNotFoundError`` when it does not exist and :class:`UnreadableFile` when it is
    not a readable ``.npz`` file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile, zlib and numpy raise many kinds for a damaged file
        raise UnreadableFile(path, f"not a readable .npz file ({type(err).__name__}: {err})") from None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    On any error the temporary file is removed and ``path`` keeps its previous content. The
    file is readable by others (0644), like any file a user writes.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(value: Any) -> Any:
    """Plain JSON data: arrays become lists, numpy numbers Python numbers, NaN and infinities null."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def config_hash(resolved: dict[str, Any]) -> str:
    """The identity of a resolved experiment: sha256 of its canonical JSON (keys sorted).

    Two configs with the same hash describe the same experiment, so their run files may be
    mixed; anything else must not be.

    Example:
        >>> config_hash({"b": 1, "a": [0.1]}) == config_hash({"a": [0.1], "b": 1})
        True
    """
    canonical = json.dumps(to_json(resolved), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_temporaries(directory: Path) -> int:
    """Delete the ``.<name>.<random>.tmp`` files a killed :func:`atomic_write` left in
    ``directory``; returns how many. Call it only while holding the directory's lock."""
    count = 0
    for tmp in directory.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            count += 1
    return count
