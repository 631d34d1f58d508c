"""The runner: owns the lifelong loop of a task stream (docs/design.md, "The flow").

:func:`run` takes one strategy over one stream with one seed: it evaluates the untrained
model (row 0), then for each task lets the strategy learn the task's training view and
evaluates every task again (row i+1), recording wall time and peak memory per task. This
module also holds what the online loop (:mod:`simulator.online`) shares with it: checkpoints
inside a task (:class:`CheckpointPolicy`), stop requests (:class:`StopRequest`), the device and
thread settings. :func:`simulator.experiment.run_experiment` runs every strategy and seed of an
experiment file.

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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from scenarios.base import Stream
from scenarios.rng import isolated_rng, rng_state, set_rng_state
from simulator.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from simulator.evaluator import EvalSettings, Evaluator
from simulator.loggers import LogError, RunLog
from simulator.results import RunResult
from strategies.base import Strategy, TaskLoop


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


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident memory on the CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so that a wall-time reading covers it."""
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


class RunCheckpoints:
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
            synchronize(self.device)
        except BaseException:
            self.strategy.loop_factory = None
            raise
        self.result.learn_seconds.append(self.end_task())
        self.result.logs.append(logs)
        self.result.peak_memory_mb.append(peak_memory_mb(self.device))
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
    with torch_threads(threads), isolated_rng(seed, device):
        strategy.setup(model, stream.spec, device, seed=seed)
        evaluator = Evaluator(stream, settings, seed, device) if evaluate else None
        T, K = len(stream), settings.adapt_steps
        result = RunResult(strategy.label, seed, stream.spec.kind,
                           acc=np.full((T + 1, stream.num_columns, K + 1), np.nan),
                           loss=np.full((T + 1, stream.num_columns, K + 1), np.nan),
                           task_ids=tuple(t.id for t in stream))
        state = RunCheckpoints(strategy, result, device, checkpoint, identity or {}, policy or CheckpointPolicy(), stop,
                     progress, log)

        def evaluate_row(i: int) -> None:
            if evaluator is None:
                return
            start = time.perf_counter()
            result.acc[i], result.loss[i] = evaluator.evaluate(strategy, row=i, plan=evaluator.row_plan(i))
            synchronize(device)
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
