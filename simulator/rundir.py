"""Run directories: ``config.json``, ``results.json``, ``tensors.npz`` and the report
(``index.html``, ``report.md``, ``figures/``; see :mod:`simulator.report`).

Every file is written to a temporary name and renamed into place, so a reader (or a crash)
never sees a half-written file. ``results.json`` holds, per strategy and seed, the metrics at
k = 0 (as learned) and k = K (after adaptation), timings and memory, the aggregate over seeds
(mean, std, 95% CI), and the environment; ``tensors.npz`` holds one array per key
``<strategy>/seed<seed>/<acc|loss>`` of shape (T+1, T, K+1).
"""

from __future__ import annotations

import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator import metrics
from simulator.files import atomic_write, to_json


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


def results_document(experiment, results, device: torch.device, complete: bool,
                     failures=()) -> dict[str, Any]:
    K = experiment.evaluation.adapt_steps
    runs, by_strategy = [], {}
    for r in results:
        at = {"k0": r.summary(0), f"k{K}": r.summary(K)}
        runs.append({"strategy": r.strategy, "seed": r.seed, "metrics": at, "task_ids": list(r.task_ids),
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
        "failures": [{"strategy": f.strategy, "seed": f.seed, "error": f.error} for f in failures],
    })


def ensure_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there; ``OSError`` otherwise."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / ".write-check", b"")
    (out_dir / ".write-check").unlink()


def write_config(out_dir: Path, experiment) -> None:
    """Create ``out_dir`` if needed and write ``config.json`` (the first write of a run, so an
    unwritable directory is found before any work is done)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "config.json", json.dumps(experiment.resolved(), indent=2).encode())


class ResumeError(ValueError):
    """``--resume`` was pointed at a directory holding another experiment."""


def check_resumable(out_dir: Path, experiment) -> None:
    """Raise :class:`ResumeError` unless ``out_dir`` is empty or holds this very experiment."""
    path = out_dir / "config.json"
    if not path.exists():
        return
    saved, now = json.loads(path.read_text()), to_json(experiment.resolved())
    if saved != now:
        differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ResumeError(f"cannot resume: {out_dir} holds a different experiment "
                         f"({', '.join(differ)} differ); use another --out or drop --resume")


def load_finished(out_dir: Path) -> list:
    """The finished runs stored in a run directory, as ``RunResult`` objects."""
    from simulator.runner import RunResult

    path = out_dir / "results.json"
    if not path.exists() or not (out_dir / "tensors.npz").exists():
        return []
    document = json.loads(path.read_text())
    tensors = load_tensors(out_dir)
    finished = []
    for run in document["runs"]:
        key = f"{run['strategy']}/seed{run['seed']}"
        finished.append(RunResult(run["strategy"], run["seed"], document["kind"],
                                  acc=tensors[f"{key}/acc"], loss=tensors[f"{key}/loss"],
                                  learn_seconds=run["learn_seconds"], eval_seconds=run["eval_seconds"],
                                  peak_memory_mb=run["peak_memory_mb"], logs=run["logs"],
                                  task_ids=tuple(run["task_ids"])))
    return finished


def write_run_dir(out_dir: Path, experiment, results, device: torch.device, complete: bool,
                  failures=(), report: bool = True) -> None:
    """Write (or rewrite) the whole run directory for the runs finished so far.

    The report (index.html, report.md, figures/) is read back from the files just written;
    its figures are drawn once ``complete``, while partial rewrites keep it to tables, which
    costs milliseconds instead of seconds per finished run.
    """
    from simulator.report import write_report

    write_config(out_dir, experiment)
    document = results_document(experiment, results, device, complete, failures)
    atomic_write(out_dir / "results.json", json.dumps(document, indent=2).encode())
    arrays = {}
    for r in results:
        arrays[f"{r.strategy}/seed{r.seed}/acc"] = r.acc
        arrays[f"{r.strategy}/seed{r.seed}/loss"] = r.loss
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(out_dir / "tensors.npz", buffer.getvalue())
    if report:  # sweeps skip the per-trial report: they report over all trials at the end
        write_report([out_dir], out_dir, draw=complete)


def load_tensors(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a run directory's ``tensors.npz`` keyed ``<strategy>/seed<seed>/<acc|loss>``."""
    with np.load(Path(run_dir) / "tensors.npz") as data:
        return {k: data[k] for k in data.files}
