"""Run directories: ``config.json``, ``results.json``, ``tensors.npz``, ``checkpoints/`` and
the report (``index.html``, ``report.md``, ``figures/``, ``.report-inputs.json``; see
:mod:`simulator.report`).

A run directory holds one experiment. :func:`prepare` (called holding the directory's lock,
:mod:`simulator.lock`) refuses a directory holding another experiment, damaged files, or a
folder that is not a run directory, each with a :class:`RunDirError` that says what to do.

Every file is written to a temporary name and renamed into place, so a reader (or a crash)
never sees a half-written file, and the finished runs are committed in an order that keeps
every state a kill can leave consistent (:func:`write_run_dir`). ``results.json`` holds, per
strategy and seed, the metrics at k = 0 (as learned) and k = K (after adaptation), timings
and memory, the aggregate over seeds (mean, std, 95% CI), the environment, and the hash of
the resolved config; ``tensors.npz`` holds one array per key
``<strategy>/seed<seed>/<acc|loss>`` of shape (T+1, T, K+1).
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator import metrics
from simulator.files import (UnreadableFile, atomic_write, config_hash, read_arrays, read_json, remove_temporaries,
                             to_json)
from simulator.report import INPUTS_FILE, write_report
from simulator.results import RunResult


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
        run = {"strategy": r.strategy, "seed": r.seed, "loop": "task" if r.online is None else "online",
               "metrics": at, "task_ids": list(r.task_ids), "learn_seconds": r.learn_seconds,
               "eval_seconds": r.eval_seconds, "peak_memory_mb": r.peak_memory_mb, "logs": r.logs}
        if r.online is not None:
            from simulator import online_metrics

            run["online"] = online_metrics.summarize_online(r.online, r.score)
        runs.append(run)
        by_strategy.setdefault(r.strategy, []).append(at)
    summary = {label: {k: metrics.aggregate([s[k] for s in seeds]) for k in seeds[0]}
               for label, seeds in by_strategy.items()}
    return to_json({
        "experiment": experiment.name, "config_hash": config_hash(to_json(experiment.resolved())),
        "complete": complete, "adapt_steps": K,
        "kind": results[0].kind if results else None,
        "environment": environment(device, experiment.threads),
        "runs": runs, "summary": summary,
        "failures": [{"strategy": f.strategy, "seed": f.seed, "error": f.error} for f in failures],
    })


RUN_FILES = ("results.json", "tensors.npz", "index.html", "report.md", INPUTS_FILE)
"""The files a run writes besides ``config.json`` (and the folders ``checkpoints/`` and ``figures/``)."""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (another experiment, damaged files, not a
    run directory): ``str(err)`` is one paragraph saying what is wrong and what to do."""


def ensure_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there; ``OSError`` otherwise."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / ".write-check", b"")
    (out_dir / ".write-check").unlink()


def _commit(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, unless the file holds these very bytes already:
    an unchanged file keeps its modification time, and a report made from it stays current
    (:func:`simulator.report.write_report` renders nothing when its inputs did not change)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:  # absent or unreadable: write it
        pass
    atomic_write(path, data)


def write_config(out_dir: Path, experiment) -> None:
    """Create ``out_dir`` if needed and write ``config.json`` (unless it holds the same text)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _commit(out_dir / "config.json", json.dumps(experiment.resolved(), indent=2).encode())


def _why(err: OSError | UnreadableFile) -> str:
    """What :func:`~simulator.files.read_json` met, without the path (the message names it)."""
    return err.reason if isinstance(err, UnreadableFile) else str(err.strerror or err)


def _read_config(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "config.json"
    try:
        saved = read_json(path)
    except (OSError, UnreadableFile) as err:
        raise RunDirError(f"{path} is damaged ({_why(err)}); the directory's experiment cannot be known: rerun with "
                          f"--overwrite to remove its results, or choose another --out") from None
    if not isinstance(saved, dict):
        raise RunDirError(f"{path} is not an experiment's config; rerun with --overwrite or choose another --out")
    return saved


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths where two resolved configs differ (at most a few, for a message)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} there, {b!r} now)")
    return out


def _stream_version(config: dict[str, Any]) -> int | None:
    """The ``scenario.stream_version`` of a resolved config (None where it has none)."""
    scenario = config.get("scenario")
    return scenario.get("stream_version") if isinstance(scenario, dict) else None


def _is_ours(path: Path) -> bool:
    return (path.name in RUN_FILES + ("config.json", "checkpoints", "figures", "logs", ".lock", ".write-check")
            or (path.name.startswith(".") and path.name.endswith(".tmp")))


def clear(out_dir: Path) -> None:
    """Remove a run directory's results, checkpoints and report (``--overwrite``); other files stay.

    ``results.json`` goes first, so that a kill midway never leaves results that look valid
    beside a config they do not belong to; ``config.json`` goes last.
    """
    import shutil

    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for folder in ("checkpoints", "figures", "logs"):  # logs: simulator.loggers
        if (out_dir / folder).is_dir():
            shutil.rmtree(out_dir / folder)
    remove_temporaries(out_dir)
    (out_dir / "config.json").unlink(missing_ok=True)


def prepare(out_dir: Path, experiment, resume: bool, overwrite: bool) -> list:
    """Make ``out_dir`` ready for ``experiment`` and return the runs already finished there.

    Call it holding the directory's lock. The directory must be new, empty, or hold this very
    experiment (same resolved config): with ``resume`` its finished runs are kept and
    returned; without, a directory holding results is refused, since running again would
    replace them. ``overwrite`` first removes whatever results are there. Anything else (another
    experiment, damaged files, a folder that is not a run directory) raises
    :class:`RunDirError` saying what differs and what to do. Leftover temporary files are
    removed, and so are the checkpoints of runs that finished.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        clear(out_dir)
    for folder in (out_dir, out_dir / "checkpoints", out_dir / "figures"):
        remove_temporaries(folder)  # what a killed atomic write left: never part of any state
    foreign = sorted(p.name for p in out_dir.iterdir() if not _is_ours(p))
    has_config = (out_dir / "config.json").exists()
    leftovers = [n for n in RUN_FILES + ("checkpoints",) if (out_dir / n).exists()]
    if foreign and not has_config and not leftovers:
        raise RunDirError(f"{out_dir} is not empty and is not a run directory (it holds {', '.join(foreign[:5])}"
                          f"{', ...' if len(foreign) > 5 else ''}); choose an empty or new --out")
    if not has_config:
        if leftovers:
            raise RunDirError(f"{out_dir} holds run files ({', '.join(leftovers)}) but no config.json, so "
                              f"whose results they are cannot be known; rerun with --overwrite to remove them, "
                              f"or choose another --out")
        return []
    saved, now = _read_config(out_dir), to_json(experiment.resolved())
    if config_hash(saved) != config_hash(now):
        differ = _differences(saved, now)
        stream_changed = _stream_version(saved) != _stream_version(now)
        versions = (f"; this version of the {now['scenario']['name']!r} stream family builds tasks that differ "
                    f"from those its runs were made on (same parameters and seed), so they cannot be continued"
                    if stream_changed else "")
        raise RunDirError(f"{out_dir} holds another experiment ({'; '.join(differ[:4])}"
                          f"{'; ...' if len(differ) > 4 else ''} differ){versions}; choose another --out, or rerun "
                          f"with --overwrite to remove its results first")
    finished = load_finished(out_dir, experiment)
    checkpoints = sorted((out_dir / "checkpoints").glob("*")) if (out_dir / "checkpoints").is_dir() else []
    if not resume and (finished or checkpoints):
        raise RunDirError(f"{out_dir} already holds results of this experiment ({len(finished)} finished run(s), "
                          f"{len(checkpoints)} checkpoint(s)); continue with --resume, or rerun with --overwrite "
                          f"to start again")
    if checkpoints:
        for r in finished:
            checkpoint_path(out_dir, r.strategy, r.seed).unlink(missing_ok=True)
    return finished


def checkpoint_path(out_dir: Path, label: str, seed: int) -> Path:
    """Where the checkpoint of (label, seed) lives; the label is hashed (any text is a label)."""
    digest = hashlib.sha256(f"{label}\0{seed}".encode()).hexdigest()[:16]
    return out_dir / "checkpoints" / f"{digest}.pt"


def read_results(out_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``results.json`` and the arrays of ``tensors.npz`` of a run directory, checked against
    each other; ``None`` when no run has finished there yet (no ``results.json``).

    Every run listed in ``results.json`` must have its arrays: ``tensors.npz`` is always
    committed before ``results.json``, so whatever a kill leaves passes this check, and a file
    that fails it is damaged (:class:`RunDirError`).
    """
    path = out_dir / "results.json"
    if not path.exists():
        return None
    advice = "rerun with --overwrite to start again, or choose another --out"
    try:
        document = read_json(path)
    except (OSError, UnreadableFile) as err:
        raise RunDirError(f"{path} is damaged ({_why(err)}); {advice}") from None
    if not isinstance(document, dict) or not isinstance(document.get("runs"), list):
        raise RunDirError(f"{path} is damaged (not a results document); {advice}")
    try:
        tensors = load_tensors(out_dir)
    except FileNotFoundError:
        raise RunDirError(f"{out_dir / 'tensors.npz'} is missing while {path} lists runs; {advice}") from None
    except UnreadableFile as err:
        raise RunDirError(f"{out_dir / 'tensors.npz'} is damaged ({err.reason}); {advice}") from None
    for run in document["runs"]:
        if not isinstance(run, dict) or not {"strategy", "seed"} <= set(run):
            raise RunDirError(f"{path} is damaged (a run without strategy or seed); {advice}")
        for name in ("acc", "loss"):
            if f"{run['strategy']}/seed{run['seed']}/{name}" not in tensors:
                raise RunDirError(f"{out_dir / 'tensors.npz'} has no {name} tensor for {run['strategy']} seed "
                                  f"{run['seed']}, which {path} lists; {advice}")
    return document, tensors


ONLINE_ARRAYS = {"online_correct": "correct", "online_pool": "pool", "online_switch": "switch", "online_task": "task"}
"""tensors.npz names of an online run's per-batch arrays, and their keys in ``RunResult.online``."""


def run_arrays(r) -> dict[str, np.ndarray]:
    """The arrays ``tensors.npz`` keeps of one run: ``acc`` and ``loss``; for an online run also
    the anytime tensors (the same arrays, under the names of docs/design.md, "The online loop")
    and the per-batch scores, pools, switches and task ids."""
    key = f"{r.strategy}/seed{r.seed}"
    arrays = {f"{key}/acc": r.acc, f"{key}/loss": r.loss}
    if r.online is not None:
        arrays.update({f"{key}/anytime_acc": r.acc, f"{key}/anytime_loss": r.loss})
        arrays.update({f"{key}/{name}": np.asarray(r.online[field]) for name, field in ONLINE_ARRAYS.items()})
    return arrays


def _online_record(run: dict[str, Any], tensors: dict[str, np.ndarray], key: str) -> dict[str, Any] | None:
    """``RunResult.online`` of a finished online run, from its files."""
    if run.get("loop") != "online":
        return None
    summary = run["online"]
    record = {field: tensors[f"{key}/{name}"] for name, field in ONLINE_ARRAYS.items()}
    record.update(eval_batches=list(summary["eval_batches"]), pools=list(summary["pools"]),
                  columns=list(summary["columns"]), recovery_window=int(summary["recovery_window"]),
                  online_seconds=float(run["learn_seconds"][-1]))
    return record


def load_finished(out_dir: Path, experiment=None) -> list[RunResult]:
    """The finished runs stored in a run directory, as :class:`~simulator.results.RunResult` objects.

    With ``experiment``, the results must be that experiment's (their config hash) and each
    tensor of the shape it produces; :class:`RunDirError` otherwise.
    """
    read = read_results(out_dir)
    if read is None:
        return []
    document, tensors = read
    path = out_dir / "results.json"
    if experiment is not None:
        expected = config_hash(to_json(experiment.resolved()))
        if document.get("config_hash") != expected:
            raise RunDirError(f"{path} holds results of another experiment than {out_dir / 'config.json'} "
                              f"(stale, or written by an older version); rerun with --overwrite to remove them")
    finished = []
    try:
        for run in document["runs"]:
            key = f"{run['strategy']}/seed{run['seed']}"
            acc, loss = tensors[f"{key}/acc"], tensors[f"{key}/loss"]
            if acc.shape != loss.shape or acc.ndim != 3 or (
                    experiment is not None and acc.shape[2] != experiment.evaluation.adapt_steps + 1):
                raise ValueError(f"tensors of {key} have shapes {acc.shape} and {loss.shape}")
            finished.append(RunResult(run["strategy"], int(run["seed"]), document["kind"], acc=acc, loss=loss,
                                      learn_seconds=list(run["learn_seconds"]),
                                      eval_seconds=list(run["eval_seconds"]),
                                      peak_memory_mb=list(run["peak_memory_mb"]), logs=list(run["logs"]),
                                      task_ids=tuple(run["task_ids"]), online=_online_record(run, tensors, key)))
    except (KeyError, TypeError, ValueError) as err:
        raise RunDirError(f"{path} or tensors.npz is damaged ({type(err).__name__}: {err}); rerun with "
                          f"--overwrite to start again") from None
    return finished


def write_run_dir(out_dir: Path, experiment, results, device: torch.device, complete: bool,
                  failures=(), report: bool = True) -> None:
    """Commit the runs finished so far: ``tensors.npz``, then ``results.json``, then the report.

    Each file is replaced atomically, and the order makes every state a kill can leave
    consistent: ``tensors.npz`` may hold one run more than ``results.json`` lists (ignored
    until the next commit), never one less. A file whose bytes would not change is left as it
    is (``np.savez`` output depends on the arrays alone, so unchanged runs give unchanged
    bytes). The report (index.html, report.md, figures/) is read back from the files just
    written, and only rendered when they changed; its figures are drawn once ``complete``,
    while partial rewrites keep it to tables, which costs milliseconds instead of seconds per
    finished run.
    """
    document = results_document(experiment, results, device, complete, failures)
    arrays = {}
    for r in results:
        arrays.update(run_arrays(r))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _commit(out_dir / "tensors.npz", buffer.getvalue())
    _commit(out_dir / "results.json", json.dumps(document, indent=2).encode())
    if report:  # sweeps skip the per-trial report: they report over all trials at the end
        write_report([out_dir], out_dir, draw=complete)


def load_tensors(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a run directory's ``tensors.npz`` keyed ``<strategy>/seed<seed>/<acc|loss>``
    (never unpickled: a crafted file cannot run code)."""
    return read_arrays(Path(run_dir) / "tensors.npz")
