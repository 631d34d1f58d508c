"""The runner: owns the lifelong loop (DESIGN section 2).

:func:`run` takes one strategy over one stream with one seed: it evaluates the untrained
model (row 0), then for each task lets the strategy learn the task's training view and
evaluates every task again (row i+1), recording wall time and peak memory per task.
:func:`run_experiment` does that for every strategy and seed of an experiment, saving the run
directory after each finished run so that a failure later loses nothing already done.

Example:
    >>> import scenarios, strategies
    >>> from simulator.evaluator import EvalSettings
    >>> stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    >>> strategy = strategies.build("finetune", {"epochs": 1})
    >>> model = strategies.build_model("mlp", {}, stream.spec)
    >>> result = run(stream, strategy, model, seed=0, settings=EvalSettings(episodes=4, adapt_steps=1))
    >>> result.acc.shape
    (3, 2, 2)
"""

from __future__ import annotations

import contextlib
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

import scenarios
import strategies
from scenarios.base import Stream
from simulator import metrics, preflight
from simulator.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, seeded, set_rng_state
from simulator.files import config_hash, to_json
from simulator.evaluator import EvalSettings, Evaluator
from simulator.loggers import LogError, RunLog
from simulator.recurring import reduce_recurring
from strategies.base import DivergenceError, Strategy, TaskLoop


@dataclass
class RunResult:
    """Everything one (strategy, seed) run produced.

    Attributes:
        acc, loss: evaluation tensors of shape (T+1, T, K+1); ``acc`` is NaN for regression.
        learn_seconds, eval_seconds: wall time of each task's ``learn`` and of each row's evaluation (T+1).
        peak_memory_mb: per task, peak CUDA memory allocated (cuda) or the process's peak
            resident memory so far (cpu; a high-water mark, so it never decreases).
        logs: what ``learn`` returned for each task.
    """

    strategy: str
    seed: int
    kind: str
    acc: np.ndarray
    loss: np.ndarray
    learn_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    peak_memory_mb: list[float] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    task_ids: tuple[int, ...] = ()  # id of the task at each stream position (a recurring task repeats its id)
    online: dict[str, Any] | None = None  # the online loop's record (simulator.online); None for the task loop

    @property
    def score(self) -> np.ndarray:
        """Higher-is-better tensor: ``acc`` for classification, ``-loss`` for regression."""
        return self.acc if self.kind == "classification" else -self.loss

    def summary(self, k: int) -> dict[str, Any]:
        """The metrics at adaptation step ``k``: DESIGN section 7's for the task loop, the online
        metrics and those of the anytime tensor for the online loop."""
        if self.online is not None:
            from simulator import online_metrics

            return online_metrics.flat_summary(self.online, self.score, k)
        # A stream with recurring tasks has N+1 > T+1 rows: the metrics use its (T+1, T) view.
        score = reduce_recurring(self.score, self.task_ids) if self.task_ids else self.score
        return metrics.summarize(score, k)


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (cuda when available) as a torch device; a ValueError
    when cuda is asked for and absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine "
                         "(use --device cpu or auto)")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (intra-op), then put the caller's count back.

    The policy of every run, from the command line or from Python: ``count`` threads while it
    runs (an experiment's ``threads``, default 1), the caller's own setting untouched after.
    Small models gain nothing from more threads but synchronisation, and results are
    bit-identical for a given count, so the count must not depend on who calls.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Interrupted(KeyboardInterrupt):
    """A run stopped at a safe point on SIGINT or SIGTERM, after saving its checkpoint."""


class StopRequest:
    """Turns SIGINT and SIGTERM into a request to stop at the next safe point.

    A safe point is the end of an iteration inside a task (for strategies whose ``learn``
    runs a :class:`~strategies.base.TaskLoop`), the end of a task, or the end of a run: the
    runner saves a checkpoint there and raises :class:`Interrupted`. A second signal stops at
    once (``KeyboardInterrupt``), losing the work since the last checkpoint. Handlers are
    installed only in the main thread and put back on exit.
    """

    def __init__(self, announce: Callable[[str], None] | None = None):
        self.requested = False
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce is not None:
            self.announce(f"{signal.Signals(signum).name}: stopping at the next safe point with a checkpoint "
                          f"(a second signal stops at once, losing the work since the last checkpoint)")


@dataclass
class CheckpointPolicy:
    """When the runner saves checkpoints inside a task, besides every task boundary and a stop
    request: every ``steps`` iterations (None: no step rule) and after ``seconds`` of wall time
    since the last one (None: no time rule). Where checkpoints fall never changes a result."""

    steps: int | None = None
    seconds: float | None = 300.0


class _Run:
    """One (strategy, seed) run's checkpointing: what a checkpoint holds and when one is saved."""

    def __init__(self, strategy: Strategy, result: RunResult, device: torch.device, path: Path | None,
                 identity: dict[str, Any], policy: CheckpointPolicy, stop: StopRequest | None, progress,
                 log: RunLog | None = None):
        self.strategy, self.result, self.device, self.path = strategy, result, device, path
        self.identity, self.policy, self.stop, self.progress = identity, policy, stop, progress
        self.log = log                  # the run's loggers (simulator.loggers), opened by open_log
        self.log_saved: dict[str, Any] | None = None   # what the checkpoint resumed from says of the log
        self.loop: TaskLoop | None = None              # the current task's loop, if its learn opened one
        self.last_save = time.monotonic()
        self.task = 0
        self.task_name = ""
        self.task_started = 0.0
        self.seconds_before = 0.0       # learn time of the current task before a resume
        self.generator_at_start: Tensor | None = None
        self.pending: dict[str, Any] | None = None   # the in-task state to resume from

    def save(self, next_task: int, in_task: dict[str, Any] | None = None) -> None:
        if self.path is None:
            return
        r = self.result
        save_checkpoint(self.path, {
            "next_task": next_task, "in_task": in_task, "strategy": self.strategy.state_dict(),
            "rng": rng_state(self.device), "acc": r.acc, "loss": r.loss, "learn_seconds": r.learn_seconds,
            "eval_seconds": r.eval_seconds, "peak_memory_mb": r.peak_memory_mb, "logs": r.logs,
            "online": r.online,
            # the log is made durable first, and the checkpoint records how far it went
            "log": None if self.log is None else self.log.commit()}, self.identity)
        self.last_save = time.monotonic()

    def restore(self) -> int:
        """Load the checkpoint into the strategy and the result; the index of the next task."""
        saved = load_checkpoint(self.path, self.identity)
        r = self.result
        try:
            self.strategy.load_state_dict(saved["strategy"])
            r.acc[:], r.loss[:] = saved["acc"], saved["loss"]
            for name in ("learn_seconds", "eval_seconds", "peak_memory_mb", "logs"):
                setattr(r, name, list(saved[name]))
            if r.online is not None:
                r.online.update(saved["online"])
            set_rng_state(saved["rng"])
            self.pending = saved["in_task"]
            self.log_saved = saved.get("log")  # absent from checkpoints written before logs existed
            return int(saved["next_task"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {self.path} does not fit this run ({type(err).__name__}: {err}); "
                                  f"delete it to restart that run from its beginning") from None

    def learn(self, i: int, task, name: str) -> None:
        """Let the strategy learn ``task`` (the i-th of its loop, resumed inside it when the
        checkpoint was taken there); record its logs, learn time and peak memory."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.begin_task(i, name)
        try:
            logs = self.strategy.learn(task.training_view())
            _sync(self.device)
        except BaseException:
            self.strategy.loop_factory = None
            raise
        self.result.learn_seconds.append(self.end_task())
        self.result.logs.append(logs)
        self.result.peak_memory_mb.append(_peak_memory_mb(self.device))
        self.log_task(i, logs)

    def begin_task(self, i: int, name: str) -> None:
        self.task, self.task_name = i, name
        self.loop = None
        self.task_started = time.perf_counter()
        if self.pending is not None:
            # learn() runs its preparation again: rewind its generator so it draws the same examples.
            self.generator_at_start = self.pending["generator_at_start"]
            self.seconds_before = float(self.pending["seconds"])
            self.strategy.generator.set_state(self.generator_at_start)
        else:
            self.generator_at_start = self.strategy.generator.get_state()
            self.seconds_before = 0.0
        self.strategy.loop_factory = self.make_loop

    def end_task(self) -> float:
        """The task's learn seconds, resumed parts included."""
        self.strategy.loop_factory = None
        if self.pending is not None:
            raise CheckpointError(f"checkpoint {self.path} was saved inside task {self.task} but "
                                  f"{self.strategy.label}'s learn did not resume it; delete it to restart the run")
        return self.seconds_before + time.perf_counter() - self.task_started

    def make_loop(self, carry: dict[str, Any]) -> TaskLoop:
        if self.strategy.loop_factory is None:
            raise RuntimeError(f"{self.strategy.label} opened a second task loop in one learn()")
        self.strategy.loop_factory = None
        if self.pending is None:
            self.loop = TaskLoop(carry, on_start=self.on_start, on_step=self.on_step)
            return self.loop
        saved, self.pending = self.pending, None
        carry = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in saved["carry"].items()}
        loop = TaskLoop(carry, start=int(saved["position"]), on_start=self.on_start, on_step=self.on_step)
        loop.resume_state = saved  # type: ignore[attr-defined]
        self.loop = loop
        return loop

    def on_start(self, loop: TaskLoop) -> None:
        saved = getattr(loop, "resume_state", None)
        if saved is not None:
            if int(saved["total"]) != loop.total:
                raise CheckpointError(f"checkpoint {self.path} was saved at iteration {saved['position']} of "
                                      f"{saved['total']}, but this task has {loop.total}; delete it to restart")
            self.strategy.generator.set_state(saved["generator"])
            set_rng_state(saved["rng"])
        if self.progress is not None:
            self.progress.task_loop(loop, self.task, self.task_name)

    def on_step(self, loop: TaskLoop) -> None:
        if self.progress is not None:
            self.progress.step(loop)
        if self.log is not None and self.log.due(loop.position):  # before a checkpoint, which commits the log
            self.log_iteration(loop)
        stop = self.stop is not None and self.stop.requested
        p = self.policy
        due = (stop or (p.steps is not None and loop.position % p.steps == 0)
               or (p.seconds is not None and time.monotonic() - self.last_save >= p.seconds))
        if not due or self.path is None:
            return
        self.save(self.task, in_task={
            "position": loop.position, "total": loop.total, "carry": loop.carry,
            "generator_at_start": self.generator_at_start, "generator": self.strategy.generator.get_state(),
            "rng": rng_state(self.device),
            "seconds": self.seconds_before + time.perf_counter() - self.task_started})
        if stop:
            raise Interrupted(f"stopped inside task {self.task} ({self.task_name!r}) at iteration "
                              f"{loop.position} of {loop.total}; checkpoint saved")

    # -- logs (simulator.loggers) ---------------------------------------------------------------
    def open_log(self) -> None:
        """Open the run's loggers: fresh, or where the checkpoint the run resumed from left them."""
        if self.log is None:
            return
        try:
            self.log.open(self.log_saved)
        except LogError as err:
            raise CheckpointError(str(err)) from None

    def log_iteration(self, loop: TaskLoop) -> None:
        """The loop's reported numbers and the strategy's own at the current iteration."""
        step = self.log.steps_done + loop.position
        self.log.record(loop.scalars, step, self.task, prefix="train/")
        self.log.record(self.strategy.log_scalars(), step, self.task, prefix="train/")

    def log_task(self, i: int, logs: dict[str, Any]) -> None:
        """After task ``i``: its last iteration when due (the loop's hook does not run after its
        last one), what ``learn`` returned, and the step count moved past the task."""
        if self.log is None:
            return
        loop, self.loop = self.loop, None
        total = loop.total if loop is not None and loop.total else 1  # a learn without a loop: one step
        if loop is not None and loop.position == total and self.log.due(total):
            self.log_iteration(loop)
        self.log.steps_done += total
        self.log.record(logs, self.log.steps_done, i, prefix="task/")

    def log_row(self, row: int, batches: int | None = None, task: int | None = None) -> None:
        """Row ``row`` of the tensors: the mean accuracy and loss at k = 0 and K over the tasks
        seen (the task loop: the columns of the tasks learned so far; the online loop, after
        ``batches`` batches: every column). A mean over a cell that was not scored is not logged."""
        if self.log is None or not self.log.loggers:
            return
        r = self.result
        if r.task_ids:
            distinct = sorted(set(r.task_ids))
            columns = sorted({distinct.index(t) for t in r.task_ids[:row]})
        else:
            columns = list(range(r.acc.shape[1]))
        if not columns:
            return
        K = r.acc.shape[2] - 1
        values = {}
        for k in sorted({0, K}):
            for name, tensor in (("accuracy", r.acc), ("loss", r.loss)):
                cells = tensor[row, columns, k]
                if name == "loss" or r.kind == "classification":
                    values[f"{name}_k{k}"] = float(cells.mean()) if np.isfinite(cells).all() else None
        step = self.log.steps_done + (batches or 0)
        self.log.record(values, step, row - 1 if task is None else task, prefix="eval/")


def run(stream: Stream, strategy: Strategy, model: nn.Module, seed: int, settings: EvalSettings,
        device: torch.device | str = "cpu", on_task: Callable[[int], None] | None = None,
        checkpoint: Path | None = None, resume: bool = False, evaluate: bool = True,
        identity: dict[str, Any] | None = None, policy: CheckpointPolicy | None = None,
        stop: StopRequest | None = None, progress=None, threads: int = 1, log: RunLog | None = None) -> RunResult:
    """Run ``strategy`` (with ``model``) over ``stream``.

    The run uses ``threads`` torch CPU threads (default 1, as an experiment file's
    ``threads``; :func:`torch_threads`) and gives the caller's thread count back when it
    returns or raises. The result depends only on the arguments: Python's, numpy's and torch's
    global RNGs are seeded from ``seed`` inside and restored afterwards. With
    ``checkpoint``, the state after each task is saved there atomically, and inside a task as
    ``policy`` says (for strategies whose ``learn`` runs a
    :class:`~strategies.base.TaskLoop`); ``identity`` (plain data, e.g. the config hash,
    label and seed) is written into each checkpoint and must match to resume from it. With
    ``resume`` and an existing checkpoint, the run continues where it was saved (between
    tasks or inside one) and ends with the same tensors as an uninterrupted run. When
    ``stop.requested`` becomes true, the run saves a checkpoint at the next safe point and
    raises :class:`Interrupted`. ``on_task(i)`` is called after task i is learned and
    evaluated; ``progress`` (optional) is told about iterations inside a task.
    ``evaluate=False`` skips every evaluation (no episodes are drawn, the tensors stay NaN and
    ``eval_seconds`` empty): the training path alone, for timing it. ``log`` (a
    :class:`~simulator.loggers.RunLog`, optional) receives what the run reports along the way
    and its position goes into every checkpoint; the caller closes it when ``run`` returns.
    """
    device = torch.device(device)
    with torch_threads(threads), seeded(seed, device):
        strategy.setup(model, stream.spec, device, seed=seed)
        evaluator = Evaluator(stream, settings, seed, device) if evaluate else None
        T, K = len(stream), settings.adapt_steps
        result = RunResult(strategy.label, seed, stream.spec.kind,
                           acc=np.full((T + 1, stream.num_columns, K + 1), np.nan),
                           loss=np.full((T + 1, stream.num_columns, K + 1), np.nan),
                           task_ids=tuple(t.id for t in stream))
        state = _Run(strategy, result, device, checkpoint, identity or {}, policy or CheckpointPolicy(), stop,
                     progress, log)

        def evaluate_row(i: int) -> None:
            if evaluator is None:
                return
            start = time.perf_counter()
            result.acc[i], result.loss[i] = evaluator.evaluate(strategy, row=i, plan=evaluator.row_plan(i))
            _sync(device)
            result.eval_seconds.append(time.perf_counter() - start)

        first = 0
        if resume and checkpoint is not None and checkpoint.exists():
            first = state.restore()
        else:
            evaluate_row(0)
        state.open_log()
        for i in range(first, T):
            state.learn(i, stream[i], stream[i].name)
            evaluate_row(i + 1)
            state.log_row(i + 1)
            state.save(i + 1)
            if on_task is not None:
                on_task(i)
            if stop is not None and stop.requested and i + 1 < T:
                raise Interrupted(f"stopped after task {i} ({stream[i].name!r}); checkpoint saved")
    return result


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
    from scenarios.online import OnlineStream
    from simulator.lock import DirectoryLock
    from simulator.online import run_online
    from simulator.rundir import RunDirError, checkpoint_path, prepare, write_config, write_run_dir

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
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)  # the model's initial weights come from the seed
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
