"""Sweeps: grids of strategies x scenarios x hyper-parameters x seeds, run as independent trials.

An experiment file declares a grid in a ``[sweep]`` table of field paths to lists of values::

    [sweep]
    "strategies.finetune.lr" = [0.01, 0.1]
    "scenario.num_tasks" = [3, 5]

Every combination of values is one grid point; each point's strategies x seeds are the
trials. A trial is a pure function of its resolved config (one strategy, one seed): its id is
the hash of that config, it runs through the same :func:`simulator.runner.run_experiment` as
``lifelong run`` into ``trials/<id>/`` (checkpointing at task boundaries), and returns its
metrics and tensors to the driver, the only process that writes ``results.db``.

Backends: ``local`` (default) runs trials in a process pool (spawned workers, one torch thread
each on the CPU, one GPU each where there are GPUs; ``--workers 1`` runs them in this process);
``ray`` runs them as Ray tasks on a local instance or an existing cluster (``--address``).
Running a sweep again skips finished (and failed) trials and resumes interrupted ones.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from simulator.config import ConfigError, apply_overrides, read_raw, set_path, validate_experiment
from simulator.store import ResultsDB

FINISHED = ("done", "failed")


@dataclass(frozen=True)
class Trial:
    """One strategy with one seed at one grid point; ``config`` is a complete experiment."""

    id: str
    config_hash: str
    point: dict[str, Any]
    strategy: str
    seed: int
    config: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    grid: dict[str, list[Any]]
    trials: tuple[Trial, ...]


class SweepError(RuntimeError):
    """A sweep cannot run (e.g. its backend is not installed); the message says what to do."""


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_sweep(path: str | Path, overrides: list[str] = (), seeds: list[int] | None = None,
               device: str | None = None) -> Sweep:
    """Read an experiment file and expand its ``[sweep]`` grid into trials.

    Every grid point is validated like a plain experiment; a problem raises
    :class:`ConfigError` whose field path says which point it came from.
    """
    path = Path(path)
    source = str(path)
    raw = apply_overrides(read_raw(path), list(overrides), source)
    grid = raw.pop("sweep", {})
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ConfigError(source, [("sweep", "must be a table of field paths to non-empty lists of values")])
    if seeds is not None:
        raw["seeds"] = list(seeds)
    if device is not None:
        raw["device"] = device
    trials: dict[str, Trial] = {}
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        data = copy.deepcopy(raw)
        for key, value in point.items():
            set_path(data, key, value, source, origin="sweep")
        try:
            experiment = validate_experiment(data, source, default_name=path.stem)
        except ConfigError as err:
            where = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(source, [(f"sweep point {where}: {p}" if p else f"sweep point {where}", m)
                                       for p, m in err.problems]) from None
        resolved = experiment.resolved()
        for label, table in resolved["strategies"].items():
            # Grid keys of other strategies do not change this one: its trials at those
            # points are the same trial (same config, same id) and run once.
            relevant = {k: v for k, v in point.items()
                        if not k.startswith("strategies.") or k.startswith(f"strategies.{label}.")}
            for seed in experiment.seeds:
                config = {**resolved, "strategies": {label: table}, "seeds": [seed]}
                trial = Trial(_hash(config), _hash({**config, "seeds": None}), relevant, label, seed, config)
                trials.setdefault(trial.id, trial)
    name = next(iter(trials.values())).config["name"] if trials else path.stem
    return Sweep(name, source, grid, tuple(trials.values()))


def run_trial(config: dict[str, Any], trial_dir: str, threads: int = 1) -> dict[str, Any]:
    """Run one trial and return its outcome as plain data (status, error, metrics, tensors).

    Never raises for a failing trial: any exception becomes ``status = "failed"`` with its
    message, so one trial cannot stop the others. Resumes from ``trial_dir`` if it holds an
    interrupted run of the same config.
    """
    import torch

    from simulator.rundir import environment
    from simulator.runner import resolve_device, run_experiment

    start = time.perf_counter()
    torch.set_num_threads(threads)
    outcome: dict[str, Any] = {"status": "failed", "error": None, "metrics": {}, "tensors": None}
    try:
        experiment = validate_experiment(config, f"trial {Path(trial_dir).name}")
        outcome["versions"] = environment(resolve_device(experiment.device), threads)
        result = run_experiment(experiment, Path(trial_dir), quiet=True, resume=True, report=False)
    except Exception as err:  # noqa: BLE001 - any error of one trial is recorded, not raised
        outcome["error"] = f"{type(err).__name__}: {err}"
    else:
        if result.failures:
            outcome["error"] = result.failures[0].error
        else:
            (run,) = result.results
            K = experiment.evaluation.adapt_steps
            scalar = lambda d: {k: v for k, v in d.items() if isinstance(v, float)}  # noqa: E731
            outcome.update(status="done", metrics={0: scalar(run.summary(0)), K: scalar(run.summary(K))},
                           tensors={"acc": run.acc, "loss": run.loss})
    outcome["seconds"] = time.perf_counter() - start
    return outcome


_gpu_counter = None


def _init_worker(threads: int, counter, gpus: int) -> None:
    """Pool initializer: pin torch threads and give this worker its own GPU (if any)."""
    if gpus:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    import torch

    torch.set_num_threads(threads)


def _local_backend(trials: list[Trial], out_dir: Path, workers: int, gpus: int) -> Iterator[tuple[Trial, dict]]:
    if workers <= 1:
        for t in trials:
            yield t, run_trial(t.config, str(out_dir / "trials" / t.id))
        return
    ctx = multiprocessing.get_context("spawn")   # fork and torch's threads do not mix
    counter = ctx.Value("i", 0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(1, counter, gpus)) as pool:
        futures = {pool.submit(run_trial, t.config, str(out_dir / "trials" / t.id)): t for t in trials}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _ray_backend(trials: list[Trial], out_dir: Path, workers: int, gpus: int,
                 address: str | None) -> Iterator[tuple[Trial, dict]]:
    try:
        import ray
    except ImportError:
        raise SweepError("the ray backend needs Ray: pip install 'lifelong[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(run_trial)
    pending = {task.remote(t.config, str(out_dir / "trials" / t.id)): t for t in trials}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


@dataclass
class SweepOutcome:
    skipped: int = 0
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def run_sweep(sweep: Sweep, out_dir: str | Path, workers: int = 1, backend: str = "local",
              address: str | None = None, quiet: bool = False) -> SweepOutcome:
    """Run every trial not yet finished in ``out_dir``; record each in ``results.db``."""
    from simulator.files import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "sweep.json", json.dumps(
        {"name": sweep.name, "source": sweep.source, "grid": sweep.grid,
         "trials": [{"id": t.id, "point": t.point, "strategy": t.strategy, "seed": t.seed} for t in sweep.trials]},
        indent=2).encode())
    db = ResultsDB(out_dir / "results.db")
    try:
        status = db.status()
        todo = [t for t in sweep.trials if status.get(t.id) not in FINISHED]
        outcome = SweepOutcome(skipped=len(sweep.trials) - len(todo))
        for t in todo:
            db.mark(t.id, config_hash=t.config_hash, point=t.point, strategy=t.strategy, seed=t.seed,
                    status="running", run_dir=str(Path("trials") / t.id))
        gpus = _gpu_count(sweep)
        if backend == "ray":
            results = _ray_backend(todo, out_dir, max(workers, 1), gpus, address)
        else:
            results = _local_backend(todo, out_dir, workers, gpus)
        progress = _progress(len(todo), quiet)
        for trial, payload in results:
            _store_tensors(out_dir / "trials" / trial.id, payload)
            db.finish(trial.id, status=payload["status"], error=payload["error"], seconds=payload["seconds"],
                      versions=payload.get("versions"), metrics=payload["metrics"])
            outcome.ran += 1
            if payload["status"] == "failed":
                outcome.failed.append((trial.id, payload["error"]))
            progress(trial, payload)
        _write_summary(out_dir, sweep, db)
    finally:
        db.close()
    return outcome


def _gpu_count(sweep: Sweep) -> int:
    devices = {t.config["device"] for t in sweep.trials}
    if not devices & {"cuda", "auto"}:
        return 0
    import torch

    return torch.cuda.device_count()


def _store_tensors(trial_dir: Path, payload: dict) -> None:
    """A trial run on another machine (Ray cluster) wrote its files there: keep a copy here."""
    if payload["tensors"] is None or (trial_dir / "tensors.npz").exists():
        return
    import io

    import numpy as np

    from simulator.files import atomic_write

    trial_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **payload["tensors"])
    atomic_write(trial_dir / "tensors.npz", buffer.getvalue())


def _progress(total: int, quiet: bool):
    if quiet:
        return lambda trial, payload: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="trial", file=sys.stderr)
        return lambda trial, payload: bar.update(1)
    count = iter(range(1, total + 1))

    def line(trial: Trial, payload: dict) -> None:
        point = ", ".join(f"{k}={v!r}" for k, v in trial.point.items())
        state = "done" if payload["status"] == "done" else f"FAILED: {payload['error']}"
        print(f"[{next(count)}/{total}] {trial.strategy} seed {trial.seed} {point} "
              f"({payload['seconds']:.1f} s): {state}", file=sys.stderr)
    return line


SUMMARY_METRICS = ("final_accuracy", "learning_accuracy", "backward_transfer", "forward_transfer", "forgetting")


def _write_summary(out_dir: Path, sweep: Sweep, db: ResultsDB) -> None:
    """``summary.md``: per grid point and strategy, mean ± 95% CI over finished seeds (k = 0)."""
    from simulator import metrics
    from simulator.files import atomic_write

    per_trial: dict[str, dict[str, float]] = {}
    for row in db.metrics():
        if row["k"] == 0:
            per_trial.setdefault(row["trial_id"], {})[row["name"]] = (
                float("nan") if row["value"] is None else row["value"])
    statuses = db.status()
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in sweep.trials:
        groups.setdefault((json.dumps(t.point, sort_keys=True), t.strategy), []).append(t)
    header = ["grid point", "strategy", "seeds done", "failed"] + list(SUMMARY_METRICS)
    lines = [f"# Sweep {sweep.name}", "", "Mean ± 95% CI over the finished seeds, as learned (k = 0).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (point, strategy), trials in groups.items():
        done = [per_trial[t.id] for t in trials if statuses.get(t.id) == "done" and t.id in per_trial]
        failed = sum(statuses.get(t.id) == "failed" for t in trials)
        cells = ["n/a"] * len(SUMMARY_METRICS)
        if done:
            agg = metrics.aggregate([{m: s[m] for m in SUMMARY_METRICS} for s in done])
            cells = [f"{agg[m]['mean']:.3f}" + ("" if len(done) < 2 else f" ± {agg[m]['ci95']:.3f}")
                     for m in SUMMARY_METRICS]
        point_text = ", ".join(f"{k}={v}" for k, v in json.loads(point).items()) or "-"
        lines.append("| " + " | ".join([point_text.replace("|", "\\|"), strategy.replace("|", "\\|"),
                                         str(len(done)), str(failed)] + cells) + " |")
    atomic_write(out_dir / "summary.md", ("\n".join(lines) + "\n").encode())
