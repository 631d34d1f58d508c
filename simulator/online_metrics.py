"""Online (task-free) metrics as pure numpy functions of a run's per-batch records
(docs/design.md, "The online loop").

Notation: a stream of L batches; ``scores[t]`` is the score of the prediction made for batch t
*before* its labels reached the learner (accuracy in [0, 1], or minus the MSE for regression:
higher is better); ``pools[t]`` the index of batch t's pool in ``pool_names``; ``switch[t]``
whether batch t starts a task (batch 0 always does). ``A`` is the anytime tensor, shape
(H, J, K+1): ``A[h, j, k]`` is the score on evaluation column j (a pool, or a task) at the
h-th evaluation, after k adaptation steps on its fixed held-out episodes.

Definitions:

- ``cumulative_accuracy``: the mean over batches of ``scores`` (total), and over the batches of
  each pool (by pool): OSAKA's online cumulative accuracy.
- ``recovery_curve``: for s = 0..n-1, the mean score over the batches that come s batches
  after the last switch (s = 0: the switch batch itself), across every task of the stream.
- ``recovery_auc``: the mean of the recovery curve over the distances that occurred (the
  normalised area under it).
- ``anytime_forgetting``: the mean over columns j of (max over h < H-1 of A[h, j, k] -
  A[H-1, j, k]), the drop from each column's best earlier evaluation to the last one.
- ``out_of_distribution_drop``: the cumulative accuracy of a reference pool (the pre-training
  distribution, :func:`reference_pool`) minus the mean of the other pools'.

:func:`summarize_online` gives the ``online`` object of ``results.json`` from the online
loop's record, and :func:`flat_summary` the same metrics as flat scalars to average over seeds.

NaN handling: NaN in ``scores`` (a diverged regression step) propagates into every mean that
includes that batch, so it is never hidden; NaN is also the answer where there is nothing to
average (a pool never visited, a distance never reached, a column evaluated once). The one
exception is ``recovery_auc``, which skips the NaN distances of the curve, because a curve
is NaN where a distance never occurred. In ``A`` a NaN cell means "not evaluated". No
function modifies its input.

How these compare with the reference implementations:

- OSAKA (ElementAI/osaka, ``main.py`` and ``MAML/metalearners/maml.py``). **Agree:** each
  batch is scored with the model as it was before that batch's labels were used (``observe``
  computes ``accuracy_after`` with the parameters adapted on the previous batch, then adapts);
  the total is the mean of the per-batch accuracies over the run, and the per-pool figure
  (their "mode": train, test, ood) the mean over that pool's batches. **Differ:** OSAKA
  records the first batch of a run as accuracy 0 (``observe`` returns its zero-initialised
  results while it has no adapted model yet), a downward bias of batch 0's true score / L on
  the total (and on its pool's mean); we score batch 0 like any other. OSAKA logs the MSE itself for
  regression (lower is better); we use minus the MSE. It aggregates runs as mean ± std
  (``np.std``, ddof = 0); our reports give mean ± a Student-t 95% interval. It has no recovery
  curve (it logs the accuracy per time step and a switch-detection rate) and no evaluation on
  held-out data during the stream, hence no anytime forgetting.
- continuum (Continvvm/continuum, ``Logger.online_cumulative_performance`` in
  ``continuum/metrics/logger.py``). **Agree:** it is the accuracy of the predictions logged
  on the training stream as it arrives (cited to Caccia et al. 2020), the same quantity when
  the caller logs each prediction before updating on its batch. **Differ:** it pools samples
  (``(preds == targets).mean()`` over every logged sample) where we average per-batch scores:
  the two agree when all batches have the same size, as in OSAKA's streams and ours, and
  differ with a short last batch. It covers only the current task (every epoch logged since
  the last ``end_task``), so it needs task boundaries and has neither a total over the stream
  nor a per-pool split; with several epochs it also counts predictions on data already
  trained on. Predicting before updating is left to the caller there; our runner enforces it.
  It is classification only.

``anytime_forgetting`` on the special case ``C[i, j, k]`` (evaluations at task boundaries) is
not :func:`simulator.metrics.forgetting`: without boundaries no row is "after learning task
j", so the max runs over every earlier row (row 0 and the rows before task j was learned
included) and over every column (the last task's too).

Example:
    >>> import numpy as np
    >>> scores = np.array([1.0, 0.0, 1.0, 1.0, 0.5])
    >>> switch = np.array([True, False, False, True, False])
    >>> recovery_curve(scores, switch, 3).tolist()      # distances 0, 1, 2, 0, 1
    [1.0, 0.25, 1.0]
    >>> cumulative_accuracy(scores, np.array([0, 0, 0, 1, 1]), ("omniglot", "mnist"))
    {'total': 0.7, 'by_pool': {'omniglot': 0.6666666666666666, 'mnist': 0.75}}
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from simulator.metrics import MetricInfo

SHOWN_METRICS: dict[str, MetricInfo] = {
    "online_accuracy": MetricInfo("Online acc.", "Online MSE", "level", False, False),
    "recovery_auc": MetricInfo("Recovery AUC", "Recovery AUC (MSE)", "level", False, False),
    "forgetting": MetricInfo("Anytime forgetting", "Anytime forgetting", "lower", True, False),
    "ood_drop": MetricInfo("Out-of-distribution drop", "Out-of-distribution drop", "lower", False, False),
}
"""The online metrics that reports and sweep reports show, with their headers and directions
(``forgetting`` here is the anytime tensor's)."""

RECOVERY_BATCHES = 20
"""Default length n of the recovery curve: batches since a switch. OSAKA's tasks last 10
batches on average at its switch probability 0.1 (50 at 0.02), so 20 covers the adaptation
phase while most distances still average over many tasks."""

IN_DISTRIBUTION_POOL = "omniglot"
"""The pre-training distribution of the osaka stream: the reference of the out-of-distribution drop."""


def _series(scores, *others) -> tuple[np.ndarray, ...]:
    """The per-batch arrays as 1-d numpy arrays of one length; ValueError otherwise."""
    arrays = (np.asarray(scores, dtype=float),) + tuple(np.asarray(o) for o in others)
    if any(a.ndim != 1 or len(a) != len(arrays[0]) for a in arrays):
        raise ValueError(f"per-batch arrays must be 1-d of one length; got shapes {[a.shape for a in arrays]}")
    return arrays


def _mean(values: np.ndarray) -> float:
    """The mean, NaN for no values (without numpy's empty-slice warning)."""
    return float(values.mean()) if values.size else math.nan


def cumulative_accuracy(scores, pools, pool_names: Sequence[str]) -> dict[str, Any]:
    """Online cumulative accuracy: ``{"total": mean of scores, "by_pool": {name: mean over
    that pool's batches}}``; NaN for a pool never visited (and for an empty stream).

    Every batch weighs the same (a mean of per-batch scores, not of samples).

    Example:
        >>> cumulative_accuracy([1.0, 0.0, 0.5], [0, 1, 1], ("a", "b", "c"))["by_pool"]
        {'a': 1.0, 'b': 0.25, 'c': nan}
    """
    scores, pools = _series(scores, pools)
    if pools.size and (pools.min() < 0 or pools.max() >= len(pool_names)):
        raise ValueError(f"pool indices must lie in 0..{len(pool_names) - 1}; got {pools.min()}..{pools.max()}")
    return {"total": _mean(scores),
            "by_pool": {name: _mean(scores[pools == p]) for p, name in enumerate(pool_names)}}


def batches_since_switch(switch) -> np.ndarray:
    """Per batch, the number of batches since the last switch at or before it (0 on a switch
    batch); -1 before the first switch, where the distance is unknown.

    Example:
        >>> batches_since_switch([False, True, False, False, True]).tolist()
        [-1, 0, 1, 2, 0]
    """
    switch = np.asarray(switch, dtype=bool)
    t = np.arange(switch.size)
    last = np.maximum.accumulate(np.where(switch, t, -1))
    return np.where(last >= 0, t - last, -1)


def recovery_curve(scores, switch, n: int = RECOVERY_BATCHES) -> np.ndarray:
    """The mean score at s = 0..n-1 batches since the last switch, shape (n,).

    ``curve[s]`` averages ``scores[t]`` over every batch t whose last switch (at or before t)
    was s batches earlier, so s = 0 averages the switch batches themselves: the first
    prediction on a new task, before any of its labels. NaN where no batch lies at distance s
    (every task shorter than s + 1 batches). Batches before the first switch are left out
    (their distance is unknown; the streams of this project always switch at batch 0).

    Example:
        >>> recovery_curve([1.0, 0.0, 1.0, 1.0, 0.5], [1, 0, 0, 1, 0], 4).tolist()
        [1.0, 0.25, 1.0, nan]
    """
    if n < 1:
        raise ValueError(f"the recovery curve needs n >= 1 points; got {n}")
    scores, switch = _series(scores, switch)
    distance = batches_since_switch(switch)
    kept = (distance >= 0) & (distance < n)
    sums = np.bincount(distance[kept], weights=scores[kept], minlength=n)
    counts = np.bincount(distance[kept], minlength=n)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def recovery_auc(curve) -> float:
    """The normalised area under a recovery curve: the mean of its non-NaN points (NaN if
    there are none). Compare curves of the same length n only.

    Example:
        >>> recovery_auc([1.0, 0.25, float("nan")])
        0.625
    """
    curve = np.asarray(curve, dtype=float)
    return _mean(curve[~np.isnan(curve)])


def anytime_forgetting(A, k: int = 0) -> float:
    """Boundary-free forgetting from the anytime tensor A, shape (H, J, K+1).

    The mean over columns j of (max over h < H-1 of A[h, j, k] - A[H-1, j, k]): how far each
    column's last score lies below its best earlier one (positive: forgotten; negative: the
    last evaluation is the best so far). NaN cells are not evaluated: the max skips them,
    and only columns evaluated at the last row and at least once before count. NaN when no
    column qualifies (H < 2, for one).

    Example:
        >>> A = np.array([[0.2, 0.5], [0.9, 0.4], [0.6, 0.3]])[:, :, None]   # H = 3, J = 2, K = 0
        >>> round(anytime_forgetting(A), 6)                                  # ((0.9 - 0.6) + (0.5 - 0.3)) / 2
        0.25
    """
    A = np.asarray(A, dtype=float)
    if A.ndim != 3:
        raise ValueError(f"A must have shape (H, J, K+1); got {A.shape}")
    if not 0 <= k < A.shape[2]:
        raise ValueError(f"k = {k} is out of range for {A.shape[2]} adaptation settings")
    if A.shape[0] < 2:
        return math.nan
    earlier, last = A[:-1, :, k], A[-1, :, k]
    counted = ~np.isnan(last) & (~np.isnan(earlier)).any(axis=0)
    if not counted.any():
        return math.nan
    best = np.where(np.isnan(earlier), -np.inf, earlier)[:, counted].max(axis=0)
    return float((best - last[counted]).mean())


def out_of_distribution_drop(by_pool: Mapping[str, float], reference: str) -> float:
    """``by_pool[reference]`` minus the mean of the other pools' values: how much worse the
    learner does away from the reference (pre-training) distribution; lower is better.

    Pools that are NaN (never visited) are left out of the mean of the others; NaN when the
    reference is NaN or no other pool has a value.

    Example:
        >>> round(out_of_distribution_drop({"omniglot": 0.9, "mnist": 0.6, "fashion": 0.5}, "omniglot"), 6)
        0.35
    """
    others = np.array([v for name, v in by_pool.items() if name != reference], dtype=float)
    others = others[~np.isnan(others)]
    if reference not in by_pool or not others.size:
        return math.nan
    return float(by_pool[reference]) - float(others.mean())


def reference_pool(pool_names: Sequence[str]) -> str:
    """The pool an out-of-distribution drop is measured from: the pre-training distribution
    (:data:`IN_DISTRIBUTION_POOL`) when the stream has it, else its first pool."""
    return IN_DISTRIBUTION_POOL if IN_DISTRIBUTION_POOL in pool_names else pool_names[0]


def _parts(record: Mapping[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """The cumulative accuracy and the recovery curve of an online loop's record."""
    scores, pools, switch = _series(record["correct"], record["pool"], record["switch"])
    return (cumulative_accuracy(scores, pools, record["pools"]),
            recovery_curve(scores, switch, record["recovery_window"]))


def summarize_online(record: Mapping[str, Any], score) -> dict[str, Any]:
    """The ``online`` object of a run's entry in ``results.json`` (the file contract).

    Args:
        record: the online loop's record (``RunResult.online``, :mod:`simulator.online`):
            the per-batch arrays ``correct`` (scores), ``pool`` and ``switch``, shape (L,)
            each, and ``eval_batches``, ``pools``, ``columns`` and ``recovery_window`` (n).
        score: the anytime score tensor (higher is better), shape (H, J, K+1).

    Returns:
        ``cumulative_accuracy`` (``total``, ``by_pool``), ``recovery_curve`` (a list of n
        points, NaN where a distance never occurred), ``recovery_auc``, ``forgetting``
        (k = 0), ``batches`` (L), ``switches`` (switch flags, batch 0's included),
        ``eval_batches``, ``pools``, ``columns`` and ``recovery_window`` (n). NaN stays NaN
        here; :func:`simulator.files.to_json` writes it as null.
    """
    score = np.asarray(score, dtype=float)
    if score.ndim != 3 or len(record["eval_batches"]) != score.shape[0] or len(record["columns"]) != score.shape[1]:
        raise ValueError(f"the anytime tensor has shape {score.shape}, but {len(record['eval_batches'])} evaluation "
                         f"rows and {len(record['columns'])} columns are named")
    cumulative, curve = _parts(record)
    return {
        "cumulative_accuracy": cumulative,
        "recovery_curve": curve.tolist(),
        "recovery_auc": recovery_auc(curve),
        "forgetting": anytime_forgetting(score, 0),
        "batches": int(np.size(record["correct"])), "switches": int(np.count_nonzero(record["switch"])),
        "eval_batches": [int(b) for b in record["eval_batches"]],
        "pools": list(record["pools"]), "columns": list(record["columns"]),
        "recovery_window": int(record["recovery_window"]),
    }


def flat_summary(record: Mapping[str, Any], score, k: int) -> dict[str, float]:
    """The online metrics of one run as flat scalars (a run's ``metrics`` at adaptation step
    ``k``, which :func:`simulator.metrics.aggregate` averages over seeds).

    Returns:
        ``final_accuracy`` (the mean over columns of the anytime tensor's last row at k),
        ``online_accuracy``, ``online_accuracy/<pool>`` for each pool, ``recovery_auc``,
        ``forgetting`` (:func:`anytime_forgetting` at k; the only one that depends on k) and
        ``ood_drop`` (:func:`out_of_distribution_drop` from :func:`reference_pool`; NaN for
        a stream of one pool).
    """
    cumulative, curve = _parts(record)
    last = np.asarray(score, dtype=float)[-1, :, k] if len(score) else np.array([np.nan])
    return {
        "final_accuracy": float(np.mean(last)),
        "online_accuracy": cumulative["total"],
        **{f"online_accuracy/{name}": value for name, value in cumulative["by_pool"].items()},
        "recovery_auc": recovery_auc(curve),
        "forgetting": anytime_forgetting(score, k),
        "ood_drop": out_of_distribution_drop(cumulative["by_pool"], reference_pool(record["pools"])),
    }
