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
import hashlib
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import scenarios
import strategies
from scenarios.base import Stream
from simulator import metrics
from simulator.checkpoint import load_checkpoint, rng_state, save_checkpoint, seeded, set_rng_state
from simulator.evaluator import EvalSettings, Evaluator
from simulator.recurring import reduce_recurring
from strategies.base import DivergenceError, Strategy


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

    @property
    def score(self) -> np.ndarray:
        """Higher-is-better tensor: ``acc`` for classification, ``-loss`` for regression."""
        return self.acc if self.kind == "classification" else -self.loss

    def summary(self, k: int) -> dict[str, Any]:
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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(stream: Stream, strategy: Strategy, model: nn.Module, seed: int, settings: EvalSettings,
        device: torch.device | str = "cpu", on_task: Callable[[int], None] | None = None,
        checkpoint: Path | None = None, resume: bool = False, evaluate: bool = True) -> RunResult:
    """Run ``strategy`` (with ``model``) over ``stream``.

    The result depends only on the arguments and the torch thread count: Python's, numpy's
    and torch's global RNGs are seeded from ``seed`` inside and restored afterwards. With
    ``checkpoint``, the state after each task is saved there atomically; with ``resume`` and
    an existing checkpoint, the run continues after the last saved task and ends with the
    same tensors as an uninterrupted run. ``on_task(i)`` is called after task i is learned
    and evaluated. ``evaluate=False`` skips every evaluation (no episodes are drawn, the
    tensors stay NaN and ``eval_seconds`` empty): the training path alone, for timing it.
    """
    device = torch.device(device)
    with seeded(seed, device):
        strategy.setup(model, stream.spec, device, seed=seed)
        evaluator = Evaluator(stream, settings, seed, device) if evaluate else None
        T, K = len(stream), settings.adapt_steps
        result = RunResult(strategy.label, seed, stream.spec.kind,
                           acc=np.full((T + 1, stream.num_columns, K + 1), np.nan),
                           loss=np.full((T + 1, stream.num_columns, K + 1), np.nan),
                           task_ids=tuple(t.id for t in stream))

        def evaluate_row(i: int) -> None:
            if evaluator is None:
                return
            start = time.perf_counter()
            result.acc[i], result.loss[i] = evaluator.evaluate(strategy)
            _sync(device)
            result.eval_seconds.append(time.perf_counter() - start)

        first = 0
        if resume and checkpoint is not None and checkpoint.exists():
            first = _restore(load_checkpoint(checkpoint), strategy, result)
        else:
            evaluate_row(0)
        for i in range(first, T):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            result.logs.append(strategy.learn(stream[i].training_view()))
            _sync(device)
            result.learn_seconds.append(time.perf_counter() - start)
            result.peak_memory_mb.append(_peak_memory_mb(device))
            evaluate_row(i + 1)
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "next_task": i + 1, "strategy": strategy.state_dict(), "rng": rng_state(device),
                    "acc": result.acc, "loss": result.loss, "learn_seconds": result.learn_seconds,
                    "eval_seconds": result.eval_seconds, "peak_memory_mb": result.peak_memory_mb,
                    "logs": result.logs})
            if on_task is not None:
                on_task(i)
    return result


def _restore(saved: dict[str, Any], strategy: Strategy, result: RunResult) -> int:
    """Put a checkpoint's state into ``strategy`` and ``result``; the next task's index."""
    strategy.load_state_dict(saved["strategy"])
    result.acc[:], result.loss[:] = saved["acc"], saved["loss"]
    for name in ("learn_seconds", "eval_seconds", "peak_memory_mb", "logs"):
        setattr(result, name, list(saved[name]))
    set_rng_state(saved["rng"])
    return saved["next_task"]


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


def checkpoint_path(out_dir: Path, label: str, seed: int) -> Path:
    """Where the checkpoint of (label, seed) lives; the label is hashed (any text is a label)."""
    digest = hashlib.sha256(f"{label}\0{seed}".encode()).hexdigest()[:16]
    return out_dir / "checkpoints" / f"{digest}.pt"


def run_experiment(experiment, out_dir: str | Path, quiet: bool = False, resume: bool = False,
                   report: bool = True) -> ExperimentOutcome:
    """Every strategy x seed of a validated experiment, writing the run directory ``out_dir``
    (config.json, results.json, tensors.npz, report.md) after each finished run.

    A run that fails (e.g. a NaN loss) is recorded with its message and the others go on.
    With ``resume``, runs already finished in ``out_dir`` are kept, and an interrupted run
    continues from its last task-boundary checkpoint; the experiment must be the same.
    ``report=False`` skips the HTML/Markdown report (sweep trials).
    """
    from simulator.rundir import check_resumable, load_finished, write_config, write_run_dir

    device = resolve_device(experiment.device)
    torch.set_num_threads(experiment.threads)
    out_dir = Path(out_dir)
    finished: dict[tuple[str, int], RunResult] = {}
    failures: list[Failure] = []
    if resume:
        check_resumable(out_dir, experiment)
        finished = {(r.strategy, r.seed): r for r in load_finished(out_dir)}
    # Streams first: a missing data file must stop the run before anything is written.
    streams = {seed: scenarios.build(experiment.scenario_name, experiment.scenario_params.model_dump(), seed)
               for seed in experiment.seeds}
    write_config(out_dir, experiment)
    T = len(streams[experiment.seeds[0]])
    todo = [(spec, seed) for spec in experiment.strategies for seed in experiment.seeds
            if (spec.label, seed) not in finished]
    progress = _Progress(len(todo) * T, quiet)
    results = list(finished.values())
    try:
        for spec, seed in todo:
            stream = streams[seed]
            strategy = strategies.strategy_class(spec.name)(spec.config, label=spec.label)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # the model's initial weights come from the seed
                model = strategies.MODELS.get(spec.model_name).from_params(
                    spec.model_params, strategy.model_spec(stream.spec))
            progress.describe(f"{spec.label} seed {seed}")
            ckpt = checkpoint_path(out_dir, spec.label, seed)
            try:
                result = run(stream, strategy, model, seed, experiment.evaluation, device,
                             on_task=lambda i: progress.advance(), checkpoint=ckpt, resume=resume)
            except DivergenceError as err:
                failures.append(Failure(spec.label, seed, str(err)))
                progress.failed(failures[-1])
            else:
                results.append(result)
                progress.finished(result)
            write_run_dir(out_dir, experiment, results, device, complete=False, failures=failures,
                          report=report)
            ckpt.unlink(missing_ok=True)
        write_run_dir(out_dir, experiment, results, device, complete=True, failures=failures, report=report)
        with contextlib.suppress(OSError):  # only when empty: nothing left to resume
            (out_dir / "checkpoints").rmdir()
    finally:
        progress.close()
    return ExperimentOutcome(results, failures, reused=len(finished))


class _Progress:
    """A tqdm bar over tasks on a terminal; one plain line per finished run otherwise."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="task", file=sys.stderr)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def finished(self, result: RunResult) -> None:
        if self.quiet or self.bar is not None:
            return
        K = result.acc.shape[2] - 1
        s0, sK = result.summary(0), result.summary(K)
        what = "accuracy" if result.kind == "classification" else "score (-MSE)"
        print(f"{result.strategy} seed {result.seed}: {len(result.learn_seconds)} tasks in "
              f"{sum(result.learn_seconds) + sum(result.eval_seconds):.1f} s; final {what} "
              f"{s0['final_accuracy']:.3f} as learned, {sK['final_accuracy']:.3f} after {K} steps; "
              f"forgetting {s0['forgetting']:.3f}", file=sys.stderr)

    def failed(self, failure: "Failure") -> None:
        if not self.quiet:
            (self.bar.write if self.bar is not None else lambda m: print(m, file=sys.stderr))(
                f"{failure.strategy} seed {failure.seed} FAILED: {failure.error}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
