"""Sweeps: grids of strategies x scenarios x hyper-parameters x seeds, run as independent trials.

An experiment file declares a grid in a ``[sweep]`` table of field paths to lists of values::

    [sweep]
    "strategies.finetune.lr" = [0.01, 0.1]
    "scenario.num_tasks" = [3, 5]

Every combination of values is one grid point; each point's strategies x seeds are the
trials. A trial is a pure function of its resolved config (one strategy, one seed): its id is
the hash of that config, it runs through the same :func:`simulator.experiment.run_experiment` as
``lifelong run`` into ``trials/<id>/`` (checkpointing at task boundaries and inside tasks),
and returns its metrics and tensors to the driver, the only process that writes
``results.db`` (:mod:`simulator.store`). One driver at a time works on an output directory
(its ``.lock``; a second one gets :class:`~simulator.lock.LockedError`).

Backends: ``local`` (default) runs the trials in ``--workers`` spawned processes, each taking
one trial after another (one torch thread each on the CPU; one GPU each, round-robin, where
there are GPUs); ``--workers 1`` runs them in this process. ``ray`` runs them as Ray tasks on
a local instance or an existing cluster (``--address``).

A sweep survives its parts:

- A pool process that dies (killed, out of memory) fails the trial it worked on, alone, as a
  failure of the environment (``worker process died (signal 9)``); a fresh process takes its
  place and the other trials go on. Ray tasks whose worker or node dies fail the same way.
- Pool processes die with the driver, however it dies (``PR_SET_PDEATHSIG`` on Linux, and a
  thread watching the parent pid), and a terminal's Ctrl-C reaches the driver only (they run
  in a process group of their own).
- Ctrl-C, or any error of the driver (a full disk, a database error), stops the pool
  processes: SIGTERM (the runner checkpoints at its next safe point), SIGKILL after
  :data:`STOP_GRACE` seconds or at once on a second Ctrl-C. Their trials go back to
  ``pending`` and ``KeyboardInterrupt`` (or the error) propagates. In-process, the runner's
  own handler takes the first Ctrl-C (it stops at its next safe point; a second one at once).
- Running a sweep again skips trials that are done or failed by themselves (a diverging loss
  fails the same way again), retries failed trials whose failure was environmental (or of
  unknown kind, recorded by an earlier version) and resumes interrupted ones (``pending``, or
  ``running`` after a killed driver) from their checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from simulator.config import ConfigError, read_overridden, set_path, validate_experiment
from simulator.store import ResultsDB, errors_named

STOP_GRACE = 10.0      # seconds a stopped trial process has to checkpoint before SIGKILL
PARENT_POLL = 1.0      # seconds between a trial process's checks that its driver lives
EXIT_STOPPED = 130     # a trial process that stopped on the driver's request (no outcome)
PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


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
               device: str | None = None, data_root: str | None = None) -> Sweep:
    """Read an experiment file and expand its ``[sweep]`` grid into trials.

    Every grid point is validated like a plain experiment; a problem raises
    :class:`ConfigError` whose field path says which point it came from. ``seeds``,
    ``device`` and ``data_root`` (from the command line) replace the file's values, as in
    :func:`simulator.config.load_experiment`: the data root resolved into each trial's
    scenario, so every trial (in any worker) reads the same files.
    """
    path = Path(path)
    source = str(path)
    raw = read_overridden(path, overrides, seeds, device, data_root)
    grid = raw.pop("sweep", {})
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ConfigError(source, [("sweep", "must be a table of field paths to non-empty lists of values")])
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
    """Run one trial and return its outcome as plain data (status, error, failure, metrics, tensors).

    Never raises for a failing trial: any exception becomes ``status = "failed"`` with its
    message and its ``failure`` kind (:func:`failure_kind`), so one trial cannot stop the
    others. A stop request (``KeyboardInterrupt``) propagates. Resumes from ``trial_dir`` if
    it holds an interrupted run of the same config.
    """
    from simulator.experiment import run_experiment
    from simulator.rundir import environment
    from simulator.runner import resolve_device, torch_threads

    start = time.perf_counter()
    with torch_threads(threads):  # the worker's count for this trial only (run_experiment then sets its own)
        outcome: dict[str, Any] = {"status": "failed", "error": None, "failure": None, "metrics": {}, "tensors": None}
        try:
            experiment = validate_experiment(config, f"trial {Path(trial_dir).name}")
            outcome["versions"] = environment(resolve_device(experiment.device), threads)
            result = run_experiment(experiment, Path(trial_dir), quiet=True, resume=True, report=False)
        except Exception as err:  # noqa: BLE001 - any error of one trial is recorded, not raised
            outcome.update(error=f"{type(err).__name__}: {err}", failure=failure_kind(err))
        else:
            if result.failures:
                outcome.update(error=result.failures[0].error, failure="trial")
            else:
                (run,) = result.results
                K = experiment.evaluation.adapt_steps
                scalar = lambda d: {k: v for k, v in d.items() if isinstance(v, float)}  # noqa: E731
                outcome.update(status="done", metrics={0: scalar(run.summary(0)), K: scalar(run.summary(K))},
                               tensors={"acc": run.acc, "loss": run.loss})
    outcome["seconds"] = time.perf_counter() - start
    return outcome


def failure_kind(err: BaseException) -> str:
    """``"environment"`` for an error of the machine, which a retry may not meet again (a file
    error such as a full disk, memory, a database error, a directory locked by another
    process); ``"trial"`` for the trial's own (a bad config, a diverging loss)."""
    import torch

    from simulator.lock import LockedError

    environmental = (OSError, MemoryError, sqlite3.Error, LockedError, torch.cuda.OutOfMemoryError)
    return "environment" if isinstance(err, environmental) else "trial"


def _failed(error: str, seconds: float) -> dict[str, Any]:
    """The outcome of a trial whose process (or Ray task) gave none."""
    return {"status": "failed", "error": error, "failure": "environment", "metrics": {}, "tensors": None,
            "seconds": seconds}


# -- the local backend: a pool of processes that outlives its members ---------------------------

def _local_backend(trials: list[Trial], out_dir: Path, workers: int, gpus: int,
                   started: Callable[[Trial], None]) -> Iterator[tuple[Trial, dict]]:
    if workers > 1:
        yield from _process_pool(trials, out_dir, workers, gpus, started)
        return
    for t in trials:
        started(t)
        yield t, run_trial(t.config, str(out_dir / "trials" / t.id))


@dataclass
class _Worker:
    process: Any            # multiprocessing's SpawnProcess
    conn: Any               # our end of its duplex pipe: trials go out, outcomes come back
    slot: int               # 0 .. workers-1: which GPU it has
    trial: Trial | None = None   # the trial it works on; None: idle
    since: float = 0.0

    def give(self, trial: Trial, out_dir: Path) -> None:
        self.conn.send((trial.config, str(out_dir / "trials" / trial.id)))
        self.trial, self.since = trial, time.perf_counter()


def _process_pool(trials: list[Trial], out_dir: Path, workers: int, gpus: int,
                  started: Callable[[Trial], None]) -> Iterator[tuple[Trial, dict]]:
    """Run the trials in at most ``workers`` spawned processes, each taking one trial after
    another (torch is imported once per process, not per trial); yield each outcome as it
    comes. A process that dies fails the trial it worked on, alone, and a fresh process takes
    its place. Leaving the generator, early or not, stops every process (:func:`_stop`)."""
    ctx = multiprocessing.get_context("spawn")   # fork and torch's threads do not mix
    queue = list(trials)
    pool: list[_Worker] = []
    try:
        while queue or any(w.trial is not None for w in pool):
            while queue and (worker := _idle_worker(ctx, pool, workers, gpus)):
                try:
                    worker.give(queue[0], out_dir)
                except OSError:   # it died since _idle_worker looked: the trial waits for another
                    _reap(worker, pool)
                    continue
                started(queue.pop(0))
            busy = [w for w in pool if w.trial is not None]
            # The timeout also catches a dead process whose pipes a child of its own keeps open.
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
            for worker in [w for w in busy if w.conn.poll() or w.process.exitcode is not None]:
                trial, outcome = worker.trial, _receive(worker)
                worker.trial = None
                if outcome is None:
                    _reap(worker, pool)
                    outcome = _failed(_death(worker), time.perf_counter() - worker.since)
                yield trial, outcome
    finally:
        _stop(pool)


def _idle_worker(ctx, pool: list[_Worker], workers: int, gpus: int) -> _Worker | None:
    """An idle live process of the pool, a new one if there is room, or None."""
    for worker in [w for w in pool if w.trial is None and not w.process.is_alive()]:
        _reap(worker, pool)   # it died between two trials
    idle = next((w for w in pool if w.trial is None), None)
    if idle is not None or len(pool) == workers:
        return idle
    slot = min(set(range(workers)) - {w.slot for w in pool})
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=_worker_process, name=f"lifelong-worker-{slot}",
                          args=(theirs, slot % gpus if gpus else None, os.getpid()))
    with _on_sigint(signal.SIG_IGN):   # inherited: no Ctrl-C reaches the process while it sets up
        process.start()
        pool.append(worker := _Worker(process, ours, slot))
    theirs.close()   # the process holds the only other end now: its death reads as end of file
    return worker


def _receive(worker: _Worker) -> dict[str, Any] | None:
    """The outcome the process sent, or None if it died."""
    try:
        if worker.conn.poll():
            return worker.conn.recv()
    except (EOFError, OSError):   # it died before or while sending
        pass
    return None


def _reap(worker: _Worker, pool: list[_Worker]) -> None:
    """Take a dead (or dying) process out of the pool."""
    pool.remove(worker)
    worker.conn.close()
    worker.process.join(STOP_GRACE)
    if worker.process.exitcode is None:   # its pipe broke, yet it lives on
        worker.process.kill()
        worker.process.join()


def _death(worker: _Worker) -> str:
    code = worker.process.exitcode
    return f"worker process died ({f'signal {-code}' if code < 0 else f'exit status {code}'})"


def _stop(workers: list[_Worker]) -> None:
    """Stop pool processes: SIGTERM (the runner saves a checkpoint at its next safe point and
    the process exits; an idle one exits at once), SIGKILL to those still alive after
    :data:`STOP_GRACE` seconds, or at once on a further Ctrl-C, which cannot interrupt the
    stopping itself."""
    hurry = threading.Event()
    with _on_sigint(lambda signum, frame: hurry.set()):
        for w in workers:
            w.process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        while not hurry.is_set() and time.monotonic() < deadline and any(w.process.is_alive() for w in workers):
            wait([w.process.sentinel for w in workers], timeout=0.1)
        for w in workers:
            if w.process.exitcode is None:
                w.process.kill()
            w.process.join()
            w.conn.close()


@contextlib.contextmanager
def _on_sigint(handler) -> Iterator[None]:
    """``handler`` (or ``signal.SIG_IGN``) takes SIGINT inside; only the main thread may change
    handlers, elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_process(conn, gpu: int | None, parent: int) -> None:
    """Body of a pool process: run the trials the driver ``parent`` sends, one after another,
    sending back each outcome, until the driver closes the pipe.

    It starts with SIGINT ignored (inherited from :func:`_idle_worker`) and moves to a
    process group of its own, so that a terminal's Ctrl-C reaches the driver only, which
    stops it with SIGTERM; it dies with the driver.
    """
    os.setpgid(0, 0)
    _die_with_parent(parent)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)   # before torch initialises CUDA
    while True:
        try:
            config, trial_dir = conn.recv()
        except EOFError:
            return
        try:
            outcome = run_trial(config, trial_dir)
        except KeyboardInterrupt:   # the driver's SIGTERM, after the runner's checkpoint
            sys.exit(EXIT_STOPPED)
        conn.send(outcome)


def _die_with_parent(parent: int) -> None:
    """End this process when the process ``parent`` ends, however it ends (even SIGKILL)."""
    if sys.platform.startswith("linux"):
        # The kernel sends SIGKILL when the thread that started this process ends.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:   # it ended before prctl took effect: no signal will come
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """Exit once ``parent`` is no longer this process's parent: where prctl does not exist,
    or its signal does not come (the driver's starting thread still lives)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


# -- the Ray backend -----------------------------------------------------------------------------

def _ray_backend(trials: list[Trial], out_dir: Path, workers: int, gpus: int, address: str | None,
                 started: Callable[[Trial], None]) -> Iterator[tuple[Trial, dict]]:
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
    pending: dict[Any, Trial] = {}
    try:
        for t in trials:
            pending[task.remote(t.config, str(out_dir / "trials" / t.id))] = t
            started(t)   # submitted: Ray does not tell when a task starts
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                trial = pending.pop(ref)
                try:
                    yield trial, ray.get(ref)
                except ray.exceptions.RayError as err:   # its worker or node died
                    yield trial, _failed(f"Ray task failed: {type(err).__name__}: {err}".splitlines()[0], 0.0)
    finally:
        for ref in pending:   # on a cluster they would run on after this driver
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


# -- the driver ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailedTrial:
    trial_id: str
    error: str
    failure: str | None     # "environment", "trial", or None: recorded before failure kinds


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: trials skipped (finished before), trials run now, and every
    failed trial of the sweep as ``results.db`` holds it after the run, earlier ones included."""

    skipped: int = 0
    ran: int = 0
    failed: list[FailedTrial] = field(default_factory=list)


def run_sweep(sweep: Sweep, out_dir: str | Path, workers: int = 1, backend: str = "local",
              address: str | None = None, quiet: bool = False) -> SweepOutcome:
    """Run every trial of ``sweep`` that needs to run in ``out_dir``; record each in ``results.db``.

    Call it from the thread that lives as long as the sweep (trial processes die with it).
    Raises :class:`~simulator.store.StoreError` (``results.db`` damaged or not writable),
    :class:`~simulator.lock.LockedError` (another driver works on ``out_dir``),
    :class:`SweepError`, ``OSError`` and ``KeyboardInterrupt``; whatever happens, no trial
    process outlives the call and, as far as the database can still be written, no trial is
    left ``running``.
    """
    from simulator.files import atomic_write, remove_temporaries
    from simulator.lock import DirectoryLock

    out_dir = Path(out_dir)
    with DirectoryLock(out_dir):
        remove_temporaries(out_dir)
        atomic_write(out_dir / "sweep.json", json.dumps(
            {"name": sweep.name, "source": sweep.source, "grid": sweep.grid,
             "trials": [{"id": t.id, "point": t.point, "strategy": t.strategy, "seed": t.seed}
                        for t in sweep.trials]}, indent=2).encode())
        db_path = out_dir / "results.db"
        with errors_named(db_path):
            db = ResultsDB(db_path)
            try:
                outcome = _run_trials(sweep, out_dir, db, workers, backend, address, quiet)
                _write_summary(out_dir, sweep, db)
            finally:
                db.close()
    return outcome


def _needs_run(row: dict[str, Any] | None) -> bool:
    return row is None or row["status"] in ("pending", "running") or (
        row["status"] == "failed" and row["failure"] != "trial")


def _run_trials(sweep: Sweep, out_dir: Path, db: ResultsDB, workers: int, backend: str,
                address: str | None, quiet: bool) -> SweepOutcome:
    rows = {r["trial_id"]: r for r in db.runs()}
    todo = [t for t in sweep.trials if _needs_run(rows.get(t.id))]
    outcome = SweepOutcome(skipped=len(sweep.trials) - len(todo))
    try:
        for t in todo:
            db.mark(t.id, config_hash=t.config_hash, point=t.point, strategy=t.strategy, seed=t.seed,
                    status="pending", run_dir=str(Path("trials") / t.id))
        gpus = _gpu_count(sweep)
        started = lambda t: db.start(t.id)  # noqa: E731
        if backend == "ray":
            results = _ray_backend(todo, out_dir, max(workers, 1), gpus, address, started)
        else:
            results = _local_backend(todo, out_dir, workers, gpus, started)
        progress = _progress(len(todo), quiet)
        with contextlib.closing(results):   # closing it stops the trial processes still running
            for trial, payload in results:
                _store_tensors(out_dir / "trials" / trial.id, payload)
                db.finish(trial.id, status=payload["status"], error=payload["error"], failure=payload["failure"],
                          seconds=payload["seconds"], versions=payload.get("versions"), metrics=payload["metrics"])
                outcome.ran += 1
                progress(trial, payload)
    except BaseException:
        _requeue(db)
        raise
    ids = {t.id for t in sweep.trials}
    outcome.failed = [FailedTrial(r["trial_id"], r["error"], r["failure"]) for r in db.runs()
                      if r["trial_id"] in ids and r["status"] == "failed"]
    return outcome


def _requeue(db: ResultsDB) -> None:
    """After a stop: trials no process works on any more go back to ``pending``."""
    with _on_sigint(signal.SIG_IGN):   # a further Ctrl-C must not leave them marked running
        try:
            db.requeue_running()
        except sqlite3.Error:
            pass   # the database cannot be written (a full disk): the next run takes `running` as pending


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
ONLINE_SUMMARY_METRICS = ("online_accuracy", "recovery_auc", "final_accuracy", "forgetting", "ood_drop")
"""The columns of ``summary.md``: the task loop's, or the online loop's (an online stream's trials)."""


def _write_summary(out_dir: Path, sweep: Sweep, db: ResultsDB) -> None:
    """``summary.md``: per grid point and strategy, mean ± 95% CI over finished seeds of each
    metric as learned (k = 0) and after adaptation (k = K, each trial's own K), side by side."""
    from simulator import metrics
    from simulator.files import atomic_write

    per_trial: dict[str, dict[int, dict[str, float]]] = {}
    for row in db.metrics():
        per_trial.setdefault(row["trial_id"], {}).setdefault(row["k"], {})[row["name"]] = (
            float("nan") if row["value"] is None else row["value"])
    # k = K is the largest k a trial recorded (a grid may vary evaluation.adapt_steps)
    at = {"k0": lambda t: per_trial[t].get(0, {}), "kK": lambda t: per_trial[t][max(per_trial[t])]}
    statuses = db.status()
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in sweep.trials:
        groups.setdefault((json.dumps(t.point, sort_keys=True), t.strategy), []).append(t)
    columns = (ONLINE_SUMMARY_METRICS if any("online_accuracy" in m.get(0, {}) for m in per_trial.values())
               else SUMMARY_METRICS)
    header = ["grid point", "strategy", "seeds done", "failed"] + [f"{m} ({k})" for m in columns
                                                                     for k in ("k = 0", "k = K")]
    lines = [f"# Sweep {sweep.name}", "",
             "Mean ± 95% CI over the finished seeds, as learned (k = 0) and after adaptation (k = K: each "
             "trial's own evaluation.adapt_steps). `lifelong report` on this directory writes the sweep's report.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (point, strategy), trials in groups.items():
        done = [t.id for t in trials if statuses.get(t.id) == "done" and t.id in per_trial]
        failed = sum(statuses.get(t.id) == "failed" for t in trials)
        cells = ["n/a"] * (2 * len(columns))
        if done:
            agg = {which: metrics.aggregate([{m: get(t).get(m, float("nan")) for m in columns} for t in done])
                   for which, get in at.items()}
            cells = [f"{agg[which][m]['mean']:.3f}" + ("" if len(done) < 2 else f" ± {agg[which][m]['ci95']:.3f}")
                     for m in columns for which in ("k0", "kK")]
        point_text = ", ".join(f"{k}={v}" for k, v in json.loads(point).items()) or "-"
        lines.append("| " + " | ".join([point_text.replace("|", "\\|"), strategy.replace("|", "\\|"),
                                         str(len(done)), str(failed)] + cells) + " |")
    atomic_write(out_dir / "summary.md", ("\n".join(lines) + "\n").encode())
