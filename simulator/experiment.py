"""Running an experiment file: every strategy x seed, each through the loop of its stream
(:func:`simulator.runner.run` for task streams, :func:`simulator.online.run_online` for online
ones), with the run directory saved after each finished run so that a failure later loses
nothing already done, progress shown while it works, and stop requests honoured at safe points.
``lifelong run`` and ``lifelong sweep`` run experiments through :func:`run_experiment`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from torch import Tensor

import scenarios
import strategies
from scenarios.online import OnlineStream
from scenarios.rng import isolated_rng
from simulator import preflight
from simulator.files import config_hash, to_json
from simulator.lock import DirectoryLock
from simulator.loggers import RunLog
from simulator.online import run_online
from simulator.results import RunResult
from simulator.rundir import RunDirError, checkpoint_path, prepare, write_config, write_run_dir
from simulator.runner import CheckpointPolicy, Interrupted, StopRequest, resolve_device, run, torch_threads
from strategies.base import DivergenceError, TaskLoop


@dataclass
class Failure:
    """A run that stopped with an error (e.g. a diverging loss); the others go on."""

    strategy: str
    seed: int
    error: str


@dataclass
class ExperimentOutcome:
    """What :func:`run_experiment` produced: finished runs, failed runs, runs taken from disk."""

    results: list[RunResult]
    failures: list[Failure]
    reused: int = 0


def run_experiment(experiment, out_dir: str | Path, quiet: bool = False, resume: bool = False,
                   report: bool = True, overwrite: bool = False, policy: CheckpointPolicy | None = None,
                   log_seconds: float = 30.0, handle_signals: bool = True) -> ExperimentOutcome:
    """Every strategy x seed of a validated experiment, writing the run directory ``out_dir``
    (config.json, results.json, tensors.npz, report.md) after each finished run.

    Nothing is written before the streams are built and checked against the strategies
    (:func:`simulator.preflight.check`), and only while holding the directory's lock (a second
    process gets :class:`~simulator.lock.LockedError`). The directory must be new, empty, or
    hold this very experiment (:func:`simulator.rundir.prepare`): with ``resume`` its finished
    runs are kept and an interrupted run continues from its last checkpoint, between tasks or
    inside one; ``overwrite`` removes earlier results first. A run that fails (e.g. a NaN loss)
    is recorded with its message and the others go on. SIGINT and SIGTERM stop at the next
    safe point with a checkpoint (:class:`StopRequest`; ``handle_signals=False`` leaves the
    process's handlers alone) and raise :class:`Interrupted`. ``report=False`` skips the
    HTML/Markdown report (sweep trials). ``log_seconds``: how often a progress line is
    printed inside a task when stderr is not a terminal.

    Each finished run is committed once (:func:`simulator.rundir.write_run_dir`), the last with
    the figures; a file whose content did not change is not rewritten. The experiment runs
    with its ``threads`` torch CPU threads, and the caller's thread count is restored when it
    returns or raises (:func:`torch_threads`).
    """
    device = resolve_device(experiment.device)
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as held:
        held.enter_context(torch_threads(experiment.threads))
        # Streams first: a missing data file or a stream the strategies cannot run on must stop the
        # run before anything is written.
        streams = {seed: scenarios.build(experiment.scenario_name, experiment.scenario_params.model_dump(), seed)
                   for seed in experiment.seeds}
        preflight.check(experiment, streams)
        digest = config_hash(to_json(experiment.resolved()))
        failures: list[Failure] = []
        progress = _Progress(quiet, log_seconds)
        stop = StopRequest(progress.note) if handle_signals else contextlib.nullcontext(None)
        try:
            held.enter_context(DirectoryLock(out_dir))
        except OSError as err:
            raise RunDirError(f"cannot write to the output directory {out_dir}: {err.strerror or err}") from None
        stop_request = held.enter_context(stop)
        finished = {(r.strategy, r.seed): r for r in prepare(out_dir, experiment, resume, overwrite)}
        write_config(out_dir, experiment)
        T = len(streams[experiment.seeds[0]])
        online = isinstance(streams[experiment.seeds[0]], OnlineStream)
        todo = [(spec, seed) for spec in experiment.strategies for seed in experiment.seeds
                if (spec.label, seed) not in finished]
        progress.start(len(todo) * T, "batch" if online else "task")
        results = list(finished.values())
        try:
            for index, (spec, seed) in enumerate(todo):
                stream = streams[seed]
                strategy = strategies.strategy_class(spec.name)(spec.config, label=spec.label)
                with isolated_rng(seed):  # the model's initial weights come from the seed
                    model = strategies.MODELS.get(spec.model_name).from_params(
                        spec.model_params, strategy.model_spec(stream.spec))
                progress.describe(spec.label, seed, T)
                ckpt = checkpoint_path(out_dir, spec.label, seed)
                identity = {"config_hash": digest, "label": spec.label, "seed": seed}
                log = RunLog(out_dir, experiment.logging, spec.label, seed) if experiment.logging.loggers else None
                try:
                    with _closing(log):
                        if online:
                            result = run_online(stream, strategy, model, seed, experiment.evaluation,
                                                experiment.online, device, checkpoint=ckpt, resume=resume,
                                                identity=identity, policy=policy, stop=stop_request, progress=progress,
                                                log=log)
                        else:
                            result = run(stream, strategy, model, seed, experiment.evaluation, device,
                                         on_task=progress.advance, checkpoint=ckpt, resume=resume, identity=identity,
                                         policy=policy, stop=stop_request, progress=progress,
                                         threads=experiment.threads, log=log)
                except DivergenceError as err:
                    failures.append(Failure(spec.label, seed, str(err)))
                    progress.failed(failures[-1])
                else:
                    results.append(result)
                    progress.finished(result)
                last = index == len(todo) - 1
                # One commit per finished run; the last one is the complete one (with figures), so
                # the end of an experiment writes nothing twice.
                write_run_dir(out_dir, experiment, results, device, complete=last, failures=failures,
                              report=report)
                ckpt.unlink(missing_ok=True)
                if stop_request is not None and stop_request.requested and not last:
                    raise Interrupted("stopped between runs; finished runs are saved")
            if not todo:  # every run finished before: rewrites only what is out of date, usually nothing
                write_run_dir(out_dir, experiment, results, device, complete=True, failures=failures, report=report)
            with contextlib.suppress(OSError):  # only when empty: nothing left to resume
                (out_dir / "checkpoints").rmdir()
        finally:
            progress.close()
    return ExperimentOutcome(results, failures, reused=len(finished))


@contextlib.contextmanager
def _closing(log: RunLog | None) -> Iterator[None]:
    """Close ``log`` after the block: complete when the run ended or diverged (its log shows
    how), left to resume (the CSV stays ``.part``) when it was interrupted or raised."""
    try:
        yield
    except DivergenceError:
        if log is not None:
            log.close(finished=True)
        raise
    except BaseException:
        if log is not None:
            log.close(finished=False)
        raise
    if log is not None:
        log.close(finished=True)


class _Progress:
    """What a run shows while it works.

    On a terminal: a bar over the tasks of all runs, and inside a task a nested bar over its
    iterations with the running loss and an ETA. Otherwise (a log file): a line per finished
    run and, inside a task, a plain line every ``log_seconds`` (iterations, loss, elapsed, ETA).
    ``quiet`` shows nothing but failures and notes.
    """

    def __init__(self, quiet: bool, log_seconds: float = 30.0):
        self.quiet, self.log_seconds = quiet, log_seconds
        self.tty = not quiet and sys.stderr.isatty()
        self.bar = self.inner = None
        self.label, self.seed, self.tasks = "", 0, 0
        self.loop_info: tuple[int, str] = (0, "")
        self.loop_started = self.last_line = 0.0

    def start(self, total: int, unit: str = "task") -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, file=sys.stderr)

    def describe(self, label: str, seed: int, tasks: int) -> None:
        self.label, self.seed, self.tasks = label, seed, tasks
        if self.bar is not None:
            self.bar.set_description(f"{label} seed {seed}")

    def advance(self, task: int) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None
        if self.bar is not None:
            self.bar.update(1)

    def task_loop(self, loop: TaskLoop, task: int, name: str) -> None:
        """A task's iterations begin (at ``loop.start`` when resumed)."""
        self.loop_info = (task, name)
        self.loop_started = self.last_line = time.monotonic()
        if self.tty:
            from tqdm import tqdm

            if self.inner is not None:
                self.inner.close()
            self.inner = tqdm(total=loop.total, initial=loop.start, unit="it", leave=False, position=1,
                              file=sys.stderr, desc=f"task {task + 1}/{self.tasks}")

    def step(self, loop: TaskLoop) -> None:
        if self.inner is not None:
            self.inner.update(1)
            if self.inner.n % 10 == 0 and loop.loss is not None:  # reading the loss synchronises a GPU
                self.inner.set_postfix(loss=f"{float(loop.loss):.4f}", refresh=False)
            return
        now = time.monotonic()
        if self.quiet or now - self.last_line < self.log_seconds:
            return
        self.last_line = now
        done = loop.position - loop.start
        rate = done / max(now - self.loop_started, 1e-9)
        eta = (loop.total - loop.position) / rate if rate > 0 else float("nan")
        loss = "" if loop.loss is None else f", loss {float(loop.loss):.4f}"
        task, name = self.loop_info
        self.note(f"{self.label} seed {self.seed}, task {task + 1}/{self.tasks} ({name}): iteration "
                  f"{loop.position}/{loop.total}{loss}, {now - self.loop_started:.0f} s, about {eta:.0f} s left")

    def online_start(self, done: int, length: int) -> None:
        """The online phase begins after ``done`` of ``length`` batches."""
        self.online_length = length
        self.loop_started = self.last_line = time.monotonic()
        self.online_first = done
        if self.bar is not None:
            self.bar.update(done)

    def online_step(self, done: int, correct: Tensor) -> None:
        """``done`` batches observed; ``correct`` their scores (read only when a line is due)."""
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.quiet or now - self.last_line < self.log_seconds:
            return
        self.last_line = now
        rate = (done - self.online_first) / max(now - self.loop_started, 1e-9)
        eta = (self.online_length - done) / rate if rate > 0 else float("nan")
        self.note(f"{self.label} seed {self.seed}: batch {done}/{self.online_length}, online score so far "
                  f"{float(correct[:done].nanmean()):.3f}, {now - self.loop_started:.0f} s, about {eta:.0f} s left")

    def note(self, message: str) -> None:
        """A line that must be seen even with ``quiet`` (e.g. a signal was received)."""
        (self.bar.write if self.bar is not None else lambda m: print(m, file=sys.stderr, flush=True))(message)

    def finished(self, result: RunResult) -> None:
        if self.quiet or self.bar is not None:
            return
        K = result.acc.shape[2] - 1
        s0, sK = result.summary(0), result.summary(K)
        what = "accuracy" if result.kind == "classification" else "score (-MSE)"
        if result.online is not None:
            print(f"{result.strategy} seed {result.seed}: {len(result.online['correct'])} batches in "
                  f"{result.online['online_seconds']:.1f} s; online {what} {s0['online_accuracy']:.3f}, recovery "
                  f"AUC {s0['recovery_auc']:.3f}, anytime forgetting {s0['forgetting']:.3f}", file=sys.stderr, flush=True)
            return
        print(f"{result.strategy} seed {result.seed}: {len(result.learn_seconds)} tasks in "
              f"{sum(result.learn_seconds) + sum(result.eval_seconds):.1f} s; final {what} "
              f"{s0['final_accuracy']:.3f} as learned, {sK['final_accuracy']:.3f} after {K} steps; "
              f"forgetting {s0['forgetting']:.3f}", file=sys.stderr, flush=True)

    def failed(self, failure: "Failure") -> None:
        if not self.quiet:
            self.note(f"{failure.strategy} seed {failure.seed} FAILED: {failure.error}")

    def close(self) -> None:
        for bar in (self.inner, self.bar):
            if bar is not None:
                bar.close()
        self.bar = self.inner = None
