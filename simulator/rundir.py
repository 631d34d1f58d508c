"""Run directories: ``config.json``, ``results.json``, ``tensors.npz`` and ``report.md``.

Every file is written to a temporary name and renamed into place, so a reader (or a crash)
never sees a half-written file. ``results.json`` holds, per strategy and seed, the metrics at
k = 0 (as learned) and k = K (after adaptation), timings and memory, the aggregate over seeds
(mean, std, 95% CI), and the environment; ``tensors.npz`` holds one array per key
``<strategy>/seed<seed>/<acc|loss>`` of shape (T+1, T, K+1).
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator import metrics


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(value: Any) -> Any:
    """Plain JSON data: arrays become lists, NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """Versions, device and threads: what a reader needs to judge and repeat a run."""
    env = {
        "python": platform.python_version(), "platform": platform.platform(),
        "lifelong": _version("lifelong"), "torch": torch.__version__, "numpy": np.__version__,
        "device": str(device), "threads": threads,
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def results_document(experiment, results, device: torch.device, complete: bool) -> dict[str, Any]:
    K = experiment.evaluation.adapt_steps
    runs, by_strategy = [], {}
    for r in results:
        at = {"k0": r.summary(0), f"k{K}": r.summary(K)}
        runs.append({"strategy": r.strategy, "seed": r.seed, "metrics": at,
                     "learn_seconds": r.learn_seconds, "eval_seconds": r.eval_seconds,
                     "peak_memory_mb": r.peak_memory_mb, "logs": r.logs})
        by_strategy.setdefault(r.strategy, []).append(at)
    summary = {label: {k: metrics.aggregate([s[k] for s in seeds]) for k in seeds[0]}
               for label, seeds in by_strategy.items()}
    return to_json({
        "experiment": experiment.name, "complete": complete, "adapt_steps": K,
        "kind": results[0].kind if results else None,
        "environment": environment(device, experiment.threads),
        "runs": runs, "summary": summary,
    })


def write_run_dir(out_dir: Path, experiment, results, device: torch.device, complete: bool) -> None:
    """Write (or rewrite) the whole run directory for the runs finished so far."""
    from simulator.report import markdown_report

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "config.json", json.dumps(experiment.resolved(), indent=2).encode())
    document = results_document(experiment, results, device, complete)
    atomic_write(out_dir / "results.json", json.dumps(document, indent=2).encode())
    arrays = {}
    for r in results:
        arrays[f"{r.strategy}/seed{r.seed}/acc"] = r.acc
        arrays[f"{r.strategy}/seed{r.seed}/loss"] = r.loss
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(out_dir / "tensors.npz", buffer.getvalue())
    atomic_write(out_dir / "report.md", markdown_report(document, experiment.resolved()).encode())


def load_tensors(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a run directory's ``tensors.npz`` keyed ``<strategy>/seed<seed>/<acc|loss>``."""
    with np.load(Path(run_dir) / "tensors.npz") as data:
        return {k: data[k] for k in data.files}
