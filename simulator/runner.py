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
from simulator.evaluator import EvalSettings, Evaluator
from strategies.base import Strategy


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

    @property
    def score(self) -> np.ndarray:
        """Higher-is-better tensor: ``acc`` for classification, ``-loss`` for regression."""
        return self.acc if self.kind == "classification" else -self.loss

    def summary(self, k: int) -> dict[str, Any]:
        return metrics.summarize(self.score, k)


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
        device: torch.device | str = "cpu", on_task: Callable[[int], None] | None = None) -> RunResult:
    """Run ``strategy`` (with ``model``) over ``stream``; the result depends only on the
    arguments and the torch thread count. Global RNGs are seeded from ``seed`` inside and
    restored afterwards. ``on_task(i)`` is called after task i is learned and evaluated."""
    device = torch.device(device)
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        strategy.setup(model, stream.spec, device, seed=seed)
        evaluator = Evaluator(stream, settings, seed, device)
        T, K = len(stream), settings.adapt_steps
        result = RunResult(strategy.label, seed, stream.spec.kind,
                           acc=np.full((T + 1, evaluator.num_columns, K + 1), np.nan),
                           loss=np.full((T + 1, evaluator.num_columns, K + 1), np.nan))

        def evaluate_row(i: int) -> None:
            start = time.perf_counter()
            result.acc[i], result.loss[i] = evaluator.evaluate(strategy)
            _sync(device)
            result.eval_seconds.append(time.perf_counter() - start)

        evaluate_row(0)
        for i, task in enumerate(stream):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            result.logs.append(strategy.learn(task.training_view()))
            _sync(device)
            result.learn_seconds.append(time.perf_counter() - start)
            result.peak_memory_mb.append(_peak_memory_mb(device))
            evaluate_row(i + 1)
            if on_task is not None:
                on_task(i)
    return result


def run_experiment(experiment, out_dir: str | Path, quiet: bool = False) -> list[RunResult]:
    """Every strategy x seed of a validated experiment; writes the run directory ``out_dir``
    (config.json, results.json, tensors.npz, report.md) after each finished run."""
    from simulator.rundir import write_run_dir  # keeps this module free of file formats

    device = resolve_device(experiment.device)
    torch.set_num_threads(experiment.threads)
    out_dir = Path(out_dir)
    results: list[RunResult] = []
    streams = {seed: scenarios.build(experiment.scenario_name, experiment.scenario_params.model_dump(), seed)
               for seed in experiment.seeds}
    total = len(experiment.strategies) * len(experiment.seeds) * len(streams[experiment.seeds[0]])
    progress = _Progress(total, quiet)
    try:
        for spec in experiment.strategies:
            for seed in experiment.seeds:
                stream = streams[seed]
                strategy = strategies.strategy_class(spec.name)(spec.config, label=spec.label)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)  # the model's initial weights come from the seed
                    model = strategies.MODELS.get(spec.model_name).from_params(spec.model_params, stream.spec)
                progress.describe(f"{spec.label} seed {seed}")
                result = run(stream, strategy, model, seed, experiment.evaluation, device,
                             on_task=lambda i: progress.advance())
                results.append(result)
                progress.finished(result)
                write_run_dir(out_dir, experiment, results, device, complete=False)
        write_run_dir(out_dir, experiment, results, device, complete=True)
    finally:
        progress.close()
    return results


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
        s = result.summary(0)
        print(f"{result.strategy} seed {result.seed}: {len(result.learn_seconds)} tasks in "
              f"{sum(result.learn_seconds) + sum(result.eval_seconds):.1f} s, "
              f"final {s['final_accuracy']:.3f}, forgetting {s['forgetting']:.3f}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
