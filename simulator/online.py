"""The online, task-free loop (docs/design.md, "The online loop"): predict each batch, score
it, then let the strategy observe it.

:func:`run_online` is :func:`simulator.runner.run`'s sibling for an
:class:`~scenarios.online.OnlineStream`. First, when the stream has a pre-training stream
(OSAKA's Omniglot background characters) and ``pretrain`` is on, the strategy learns each of
its tasks, as in the task loop (meta-learners meta-train there). Then, for each batch ``t``:

1. ``out = strategy.predict_online(batch.x)``: the strategy sees the inputs only;
2. the prediction is scored against the labels (accuracy, or minus the MSE for regression):
   ``online_correct[t]``, the score of a prediction made before the update;
3. ``strategy.observe(batch.x, batch.y, task)``, where ``task`` is the batch's task id only
   when the stream's boundaries are ``given``;
4. after every ``eval_every`` batches (and before the first and after the last), every column
   of the stream (a pool, or a task) is scored on fixed held-out episodes after 0..K
   adaptation steps by the ordinary :class:`~simulator.evaluator.Evaluator`: row ``h`` of the
   anytime tensor ``A[h, j, k]``.

The runner owns the order, so no strategy can see labels before its prediction is scored.
Checkpoints are taken after every pre-training task, inside a pre-training task as the task
loop takes them, and every ``policy.steps`` batches or ``policy.seconds`` of wall time online,
and at once on SIGINT/SIGTERM; a resumed run ends bit-identical to an uninterrupted one,
because every batch is a pure function of (stream parameters, seed, t) and every other state
is in the checkpoint.

The result is a :class:`~simulator.runner.RunResult` whose ``acc`` and ``loss`` are the
anytime tensors (H, J, K+1) and whose ``online`` holds the per-batch record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from scenarios.base import Stream
from scenarios.params import Params
from scenarios.rng import isolated_rng
from simulator.evaluator import EvalSettings, Evaluator
from simulator.results import RunResult
from simulator.runner import CheckpointPolicy, Interrupted, RunCheckpoints, peak_memory_mb, synchronize
from strategies.base import Strategy


class OnlineSettings(Params):
    """How the online loop runs and what it measures: the ``[online]`` table of an experiment file.

    Attributes:
        eval_every: batches between two rows of the anytime tensor (rows are also taken
            before the first batch and after the last).
        pretrain: learn the stream's pre-training tasks before the online phase.
        recovery_window: n, the length of the recovery curve (batches since a switch).
    """

    eval_every: int = Field(1000, gt=0, description="online streams: batches between two rows of the anytime "
                                                    "tensor (also one before the first batch and after the last)")
    pretrain: bool = Field(True, description="online streams: learn the stream's pre-training tasks first")
    recovery_window: int = Field(20, gt=0, description="online streams: batches after a switch that the recovery "
                                                       "curve covers")


def evaluation_points(length: int, eval_every: int) -> list[int]:
    """The batch counts after which the anytime tensor has a row: 0, every ``eval_every``, and
    ``length``.

    Example:
        >>> evaluation_points(10, 4)
        [0, 4, 8, 10]
    """
    return sorted({0, length, *range(eval_every, length, eval_every)})


def batch_score(outputs: Tensor, y: Tensor, kind: str) -> Tensor:
    """The score of one batch's predictions, on the device: accuracy, or minus the MSE."""
    if kind == "regression":
        return -F.mse_loss(outputs, y)
    return (outputs.argmax(-1) == y).double().mean()


def run_online(stream, strategy: Strategy, model: nn.Module, seed: int, settings: EvalSettings,
               online: OnlineSettings, device: torch.device | str = "cpu", checkpoint: Path | None = None,
               resume: bool = False, identity: dict[str, Any] | None = None, policy=None, stop=None,
               progress=None, log=None):
    """Run ``strategy`` over the online stream ``stream`` (see the module docstring).

    The arguments are those of :func:`simulator.runner.run`, plus ``online``. Same seed, same
    thread count: bit-identical results, resumed or not. With ``log``, every ``log.every``
    batches the online score of those batches, what ``observe`` returned for the last one and
    :meth:`~strategies.base.Strategy.log_scalars` are logged (``online/`` tags), and each row
    of the anytime tensor (``eval/`` tags).
    """
    device = torch.device(device)
    with isolated_rng(seed, device):
        strategy.setup(model, stream.spec, device, seed=seed)
        columns = Stream(stream.spec, tuple(stream.columns))
        evaluator = Evaluator(columns, settings, seed, device)
        length, K = len(stream), settings.adapt_steps
        points = evaluation_points(length, online.eval_every)
        row_after = {done: h for h, done in enumerate(points)}  # a dict: looked up every batch
        meta = stream.meta()
        result = RunResult(strategy.label, seed, stream.spec.kind,
                           acc=np.full((len(points), columns.num_columns, K + 1), np.nan),
                           loss=np.full((len(points), columns.num_columns, K + 1), np.nan))
        result.online = {
            "correct": np.full(length, np.nan), "pool": meta["pool"].astype(np.int64),
            "switch": meta["switch"].astype(bool), "task": meta["task"].astype(np.int64),
            "eval_batches": points, "pools": list(stream.pools), "columns": list(stream.column_names),
            "recovery_window": online.recovery_window, "online_seconds": 0.0}
        state = RunCheckpoints(strategy, result, device, checkpoint, identity or {}, policy or CheckpointPolicy(), stop,
                     progress, log)
        pretrain = list(stream.pretrain) if online.pretrain and stream.pretrain is not None else []

        def evaluate_row(h: int) -> None:
            start = time.perf_counter()
            result.acc[h], result.loss[h] = evaluator.evaluate(strategy, row=points[h])
            synchronize(device)
            result.eval_seconds.append(time.perf_counter() - start)

        position = state.restore() if resume and checkpoint is not None and checkpoint.exists() else 0
        state.open_log()
        for i in range(position, len(pretrain)):
            state.learn(i, pretrain[i], f"pre-training: {pretrain[i].name}")
            state.save(i + 1)
            if stop is not None and stop.requested:
                raise Interrupted(f"stopped after pre-training task {i}; checkpoint saved")
        first = max(position - len(pretrain), 0)
        if first == 0:
            evaluate_row(0)
            state.log_row(0, batches=0, task=-1)
        if progress is not None:
            progress.online_start(first, length)
        correct = torch.full((length,), float("nan"), dtype=torch.float64, device=device)
        correct[:first] = torch.from_numpy(result.online["correct"][:first]).to(device)
        given = stream.boundaries == "given"
        started = time.perf_counter()
        for t in range(first, length):
            batch = stream.batch(t)
            x, y = batch.x.to(device), batch.y.to(device)
            correct[t] = batch_score(strategy.predict_online(x), y, stream.spec.kind)
            observed = strategy.observe(x, y, batch.task if given else None)
            done = t + 1
            if log is not None and log.due(done):
                _log_batches(state, done, correct, observed, batch.task, stream.spec.kind)
            if done in row_after:
                evaluating = time.perf_counter()
                evaluate_row(row_after[done])
                state.log_row(row_after[done], batches=done, task=-1)
                started += time.perf_counter() - evaluating  # online_seconds: the loop alone
            if progress is not None:
                progress.online_step(done, correct)
            if done < length and _due(state, done, stop):
                _record(result, correct, done, started)
                started = time.perf_counter()
                state.save(len(pretrain) + done)
                if stop is not None and stop.requested:
                    raise Interrupted(f"stopped after batch {done} of {length}; checkpoint saved")
        synchronize(device)
        _record(result, correct, length, started)
        result.learn_seconds.append(result.online["online_seconds"])
        result.peak_memory_mb.append(peak_memory_mb(device))
    return result


def _log_batches(state, done: int, correct: Tensor, observed: dict[str, Any], task: int, kind: str) -> None:
    """Log after ``done`` batches: the mean online score of the last ``every`` batches
    (``online/accuracy``, or ``online/mse`` for regression), what ``observe`` returned for the
    last batch, and the strategy's own numbers (a host synchronisation: only at this interval)."""
    log = state.log
    score = float(correct[done - log.every:done].mean())
    values = {"accuracy": score} if kind == "classification" else {"mse": -score}
    step = log.steps_done + done
    log.record({**values, **(observed or {})}, step, int(task), prefix="online/")
    log.record(state.strategy.log_scalars(), step, int(task), prefix="online/")


def _due(state, done: int, stop) -> bool:
    """Whether a checkpoint is due after ``done`` batches (a stop request, the step or the time rule)."""
    p = state.policy
    return ((stop is not None and stop.requested) or (p.steps is not None and done % p.steps == 0)
            or (p.seconds is not None and time.monotonic() - state.last_save >= p.seconds))


def _record(result, correct: Tensor, done: int, started: float) -> None:
    """Copy the scores so far into the result (a host synchronisation: only at checkpoints)."""
    result.online["correct"][:done] = correct[:done].cpu().numpy()
    result.online["online_seconds"] += time.perf_counter() - started
