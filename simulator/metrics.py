"""Lifelong-learning metrics as pure numpy functions of the evaluation tensor (docs/design.md, "Metrics").

Notation: ``R`` has shape (T+1, T); ``R[i, j]`` is the score on task j after learning tasks
0..i-1 (row 0: before any training). ``score`` has shape (T+1, T, K+1), the last axis being
adaptation steps; ``R = score[:, :, k]``. Scores are "higher is better": accuracy for
classification, minus the loss for regression.

BWT and FWT divide by T-1 as in the GEM paper (its released code divides by T). Functions
that need two tasks return NaN when T = 1. No function modifies its input.

Example:
    >>> import numpy as np
    >>> R = np.array([[0.1, 0.1], [0.9, 0.2], [0.5, 0.8]])
    >>> round(backward_transfer(R), 6), round(forgetting(R), 6), round(forward_transfer(R), 6)
    (-0.4, 0.4, 0.1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class MetricInfo:
    """How a scalar metric of :func:`summarize` is shown and read.

    Attributes:
        header, header_regression: its short name in tables, for classification and for
            regression streams (where scores are minus the MSE).
        better: ``"higher"``, ``"lower"``, or ``"level"`` (a score: higher accuracy, lower MSE).
        per_k: whether it is a metric of ``R = score[:, :, k]`` (so it depends on k) or a
            summary over every k.
        needs_two_tasks: whether it is NaN by definition on a stream of one task.
    """

    header: str
    header_regression: str
    better: str
    per_k: bool
    needs_two_tasks: bool


METRICS: dict[str, MetricInfo] = {
    "final_accuracy": MetricInfo("Final acc.", "Final MSE", "level", True, False),
    "average_incremental_accuracy": MetricInfo("Avg. incremental acc.", "Avg. incremental MSE", "level", True, False),
    "learning_accuracy": MetricInfo("Learning acc.", "Learning MSE", "level", True, False),
    "backward_transfer": MetricInfo("BWT", "BWT", "higher", True, True),
    "forgetting": MetricInfo("Forgetting", "Forgetting", "lower", True, True),
    "forward_transfer": MetricInfo("FWT", "FWT", "higher", True, True),
    "new_task_adaptation": MetricInfo("New-task adapt.", "New-task adapt. MSE", "level", False, False),
    "recovery_adaptation": MetricInfo("Recovery adapt.", "Recovery adapt. MSE", "level", False, True),
    "avalanche_forgetting": MetricInfo("Avalanche forgetting", "Avalanche forgetting", "lower", True, True),
    "avalanche_forward_transfer": MetricInfo("Avalanche FWT", "Avalanche FWT", "higher", True, True),
}
"""Every scalar metric of :func:`summarize`: the one list of their names, headers and directions."""

SCALAR_METRICS = tuple(METRICS)
MATRIX_METRICS = ("final_accuracy", "average_incremental_accuracy", "learning_accuracy", "backward_transfer",
                  "forward_transfer", "forgetting")
"""The metrics of ``R`` that reports show (Avalanche's variants are in the data only), in report order."""


def _matrix(R) -> tuple[np.ndarray, int]:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] + 1:
        raise ValueError(f"R must have shape (T+1, T); got {R.shape}")
    return R, R.shape[1]


def _tensor(score) -> tuple[np.ndarray, int]:
    score = np.asarray(score, dtype=float)
    if score.ndim != 3 or score.shape[0] != score.shape[1] + 1:
        raise ValueError(f"score must have shape (T+1, T, K+1); got {score.shape}")
    return score, score.shape[1]


def final_accuracy(R) -> float:
    """ACC: mean_j R[T, j], the score on every task after the whole stream."""
    R, T = _matrix(R)
    return float(R[T].mean())


def average_incremental_accuracy(R) -> float:
    """Mean over i = 1..T of (mean over j < i of R[i, j]): the score on the tasks seen so far,
    averaged over the stream."""
    R, T = _matrix(R)
    return float(np.mean([R[i, :i].mean() for i in range(1, T + 1)]))


def learning_accuracy(R) -> float:
    """LA: mean_j R[j+1, j], each task's score right after it was learned."""
    R, T = _matrix(R)
    return float(np.mean([R[j + 1, j] for j in range(T)]))


def backward_transfer(R) -> float:
    """BWT (GEM): 1/(T-1) * sum over j = 0..T-2 of (R[T, j] - R[j+1, j]); negative = forgetting."""
    R, T = _matrix(R)
    if T < 2:
        return math.nan
    return float(sum(R[T, j] - R[j + 1, j] for j in range(T - 1)) / (T - 1))


def forgetting(R) -> float:
    """Forgetting (Chaudhry et al. 2018): 1/(T-1) * sum over j = 0..T-2 of
    (max over l = j+1..T-1 of R[l, j] - R[T, j]); the drop from each task's best earlier score."""
    R, T = _matrix(R)
    if T < 2:
        return math.nan
    return float(sum(R[j + 1:T, j].max() - R[T, j] for j in range(T - 1)) / (T - 1))


def forward_transfer(R) -> float:
    """FWT (GEM): 1/(T-1) * sum over j = 1..T-1 of (R[j, j] - R[0, j]); the score on a task
    just before learning it, against the untrained model."""
    R, T = _matrix(R)
    if T < 2:
        return math.nan
    return float(sum(R[j, j] - R[0, j] for j in range(1, T)) / (T - 1))


def avalanche_forgetting(R) -> float:
    """Avalanche's stream forgetting: mean over j = 0..T-2 of (R[j+1, j] - R[T, j]), the drop
    from right after learning (not from the best earlier score). Equals -BWT."""
    R, T = _matrix(R)
    if T < 2:
        return math.nan
    return float(np.mean([R[j + 1, j] - R[T, j] for j in range(T - 1)]))


def avalanche_forward_transfer(R) -> float:
    """Avalanche's stream forward transfer: mean over j = 1..T-1 of (R[j, j] - R[0, j]), the
    score just before training on a task against the score at initialisation. Same as FWT."""
    R, T = _matrix(R)
    if T < 2:
        return math.nan
    return float(np.mean([R[j, j] - R[0, j] for j in range(1, T)]))


def adaptation_auc(score) -> np.ndarray:
    """Per (i, j): mean over k of score[i, j, k], the normalised area under the adaptation
    curve. Shape (T+1, T)."""
    score, _ = _tensor(score)
    return score.mean(axis=2)


def steps_to_threshold(score, frac: float = 0.9) -> np.ndarray:
    """Per (i, j): least k with score[i, j, k] >= frac * score[i, j, K], else NaN. Shape (T+1, T).

    The formula assumes non-negative scores (accuracies); with negative scores (minus a loss)
    the threshold lies above the final score and is usually not reached.
    """
    score, _ = _tensor(score)
    reached = score >= frac * score[:, :, -1:]
    first = reached.argmax(axis=2).astype(float)
    first[~reached.any(axis=2)] = np.nan
    return first


def new_task_steps(score, frac: float = 0.9) -> float:
    """Mean over j of steps_to_threshold[j, j]: steps to adapt to task j before it was learned
    (NaN if a cell never reaches the threshold).

    Example:
        >>> new_task_steps(np.array([[[0.0, 0.5, 1.0]], [[1.0, 1.0, 1.0]]]))  # T = 1, K = 2
        2.0
    """
    steps = steps_to_threshold(score, frac)
    return float(np.mean([steps[j, j] for j in range(steps.shape[1])]))


def recovery_steps(score, frac: float = 0.9) -> float:
    """Mean over j < T-1 of steps_to_threshold[T, j]: steps to re-adapt to old tasks at the end."""
    steps = steps_to_threshold(score, frac)
    T = steps.shape[1]
    if T < 2:
        return math.nan
    return float(steps[T, : T - 1].mean())


def new_task_adaptation(score) -> float:
    """Mean over j of adaptation_auc[j, j]: adapting to task j before it was learned."""
    auc = adaptation_auc(score)
    return float(np.mean([auc[j, j] for j in range(auc.shape[1])]))


def recovery_adaptation(score) -> float:
    """Mean over j < T-1 of adaptation_auc[T, j]: re-adapting to old tasks at the end."""
    auc = adaptation_auc(score)
    T = auc.shape[1]
    if T < 2:
        return math.nan
    return float(auc[T, : T - 1].mean())


def summarize(score, k: int) -> dict[str, float | np.ndarray]:
    """Every metric for adaptation step ``k`` (R = score[:, :, k]) as one dict.

    Scalars for the matrix metrics and the two adaptation summaries; the (T+1, T) arrays
    ``adaptation_auc`` and ``steps_to_threshold`` (which do not depend on k) as arrays.
    """
    score, _ = _tensor(score)
    R = score[:, :, k]
    return {
        "final_accuracy": final_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "learning_accuracy": learning_accuracy(R),
        "backward_transfer": backward_transfer(R),
        "forgetting": forgetting(R),
        "forward_transfer": forward_transfer(R),
        "avalanche_forgetting": avalanche_forgetting(R),
        "avalanche_forward_transfer": avalanche_forward_transfer(R),
        "new_task_adaptation": new_task_adaptation(score),
        "recovery_adaptation": recovery_adaptation(score),
        "adaptation_auc": adaptation_auc(score),
        "steps_to_threshold": steps_to_threshold(score),
    }


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t  # only needed when aggregating

    return float(t.ppf(0.975, dof))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, float | int]:
    """A minus B paired by seed: the mean of ``a[s] - b[s]`` over the seeds both have, its
    sample std and 95% confidence half-width (Student's t on the differences), and ``n``.

    NaN mean with no common seed; NaN std and half-width with one pair; a non-finite value in
    any pair makes every number NaN (nothing hidden).

    Example:
        >>> d = paired_difference({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.1})
        >>> round(d["mean"], 6), round(d["ci95"], 3), d["n"]
        (0.3, 0.248, 3)
    """
    common = sorted(set(a) & set(b))
    diff = np.array([a[s] - b[s] for s in common], dtype=float)
    n = len(common)
    if n == 0 or not np.isfinite(diff).all():
        return {"mean": math.nan, "std": math.nan, "ci95": math.nan, "n": n}
    if n == 1:
        return {"mean": float(diff[0]), "std": math.nan, "ci95": math.nan, "n": 1}
    std = float(diff.std(ddof=1))
    return {"mean": float(diff.mean()), "std": std, "ci95": t_quantile_975(n - 1) * std / math.sqrt(n), "n": n}


def aggregate(summaries: Sequence[Mapping[str, float | np.ndarray]]) -> dict[str, dict[str, float | np.ndarray]]:
    """Mean, sample std and 95% confidence half-width (Student's t) over seeds, per metric.

    Returns ``{metric: {"mean", "std", "ci95", "n"}}``; with one seed, std and ci95 are NaN.
    Arrays are aggregated elementwise. NaN in any seed makes that entry NaN (nothing hidden).
    """
    if not summaries:
        raise ValueError("aggregate needs at least one summary")
    n = len(summaries)
    out = {}
    for name in summaries[0]:
        values = np.stack([np.asarray(s[name], dtype=float) for s in summaries])
        mean = values.mean(axis=0)
        if n > 1:
            std = values.std(axis=0, ddof=1)
            ci = t_quantile_975(n - 1) * std / math.sqrt(n)
        else:
            std = np.full_like(mean, np.nan)
            ci = np.full_like(mean, np.nan)
        to_out = (lambda a: float(a)) if mean.ndim == 0 else (lambda a: a)
        out[name] = {"mean": to_out(mean), "std": to_out(std), "ci95": to_out(ci), "n": n}
    return out
