"""What a report shows, computed from a run directory's files only (so old runs still report).

:func:`load_run` reads ``config.json``, ``results.json`` and ``tensors.npz``; the other
functions are pure numpy over what it returns. Every number is "higher is better" inside
(``score`` is accuracy, or minus the MSE for regression) and turned into the unit a reader
expects only by :func:`to_display` (accuracy, or the MSE itself for regression).

A run of the online loop (``"loop": "online"`` in ``results.json``) also has its per-batch
records (:class:`OnlineRuns`); its ``score`` is then the anytime tensor A[h, j, k] (H
evaluations x J columns), not the task tensor R[i, j, k], and :func:`online_stats` gives its
metrics (:mod:`simulator.online_metrics`) per seed.

Example:
    >>> import numpy as np
    >>> mean, ci = mean_ci(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> mean.tolist(), ci.round(3).tolist()
    ([2.0, 3.0], [12.706, 12.706])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulator import metrics, online_metrics
from simulator.files import UnreadableFile, read_arrays, read_json
from simulator.loggers import LogError, read_run_logs


class ReportError(ValueError):
    """A run directory that cannot be reported: ``str(err)`` names the file and the problem."""


@dataclass(frozen=True)
class OnlineRuns:
    """What the online loop recorded for every seed of one strategy.

    Attributes:
        scores: shape (seeds, L), the score of each batch's prediction made before its update
            (accuracy, or minus the MSE): higher is better.
        pools: shape (seeds, L), each batch's index into ``pool_names``.
        switches: shape (seeds, L), whether each batch starts a task.
        pool_names: the stream's pools.
        column_names: the J evaluation columns of the anytime tensor (pools or tasks).
        eval_batches: per row h of the anytime tensor, the batch after which it was evaluated.
        recovery_batches: n, the length of the recovery curves the runs recorded.
    """

    scores: np.ndarray
    pools: np.ndarray
    switches: np.ndarray
    pool_names: tuple[str, ...]
    column_names: tuple[str, ...]
    eval_batches: tuple[int, ...]
    recovery_batches: int


@dataclass(frozen=True)
class StrategyRuns:
    """Every seed of one strategy in one run directory.

    Attributes:
        label: the strategy's label in the experiment file.
        seeds: the seeds, in the order of the runs.
        score: shape (seeds, T+1, T, K+1), higher is better. For a stream whose tasks recur,
            this is the (T+1, T) view of :func:`simulator.recurring.reduce_recurring` when
            ``results.json`` gives the run's ``task_ids``, else the saved (N+1, T) rows as they are.
            For an online run, the anytime tensor: shape (seeds, H, J, K+1).
        learn_seconds: per seed, the wall time of each task's ``learn``.
        eval_seconds: per seed, the wall time of each evaluation row.
        peak_memory_mb: per seed, the peak memory after each task.
        online: the per-batch records of an online run; None for the task loop.
    """

    label: str
    seeds: tuple[int, ...]
    score: np.ndarray
    learn_seconds: tuple[tuple[float, ...], ...]
    eval_seconds: tuple[tuple[float, ...], ...]
    peak_memory_mb: tuple[tuple[float, ...], ...]
    online: OnlineRuns | None = None


@dataclass(frozen=True)
class RunData:
    """One run directory as a report needs it.

    Attributes:
        directory: the directory's own name (not its path, which differs between machines).
        config: ``config.json``, the resolved experiment.
        document: ``results.json``.
        strategies: one entry per strategy with at least one finished seed, in file order.
    """

    directory: str
    config: dict[str, Any]
    document: dict[str, Any]
    strategies: tuple[StrategyRuns, ...]
    logs: dict[tuple[str, int], Any] = field(default_factory=dict)  # (label, seed) -> CSV log curves (simulator.loggers)

    @property
    def name(self) -> str:
        return str(self.document.get("experiment") or self.config.get("name") or self.directory)

    @property
    def scenario(self) -> str:
        return str(self.config.get("scenario", {}).get("name", "unknown scenario"))

    @property
    def regression(self) -> bool:
        return self.document.get("kind") == "regression"

    @property
    def adapt_steps(self) -> int:
        return int(self.document["adapt_steps"])

    @property
    def online(self) -> bool:
        """Whether the runs are of the online loop (``score`` is then the anytime tensor)."""
        return is_online(self.document)

    @property
    def square(self) -> bool:
        """Whether every strategy's tensor has the (T+1, T) shape that R[j, j] and R[j+1, j] need
        (never for an online run, whose rows are evaluations, not tasks learned)."""
        return not self.online and all(s.score.shape[1] == s.score.shape[2] + 1 for s in self.strategies)

    @property
    def complete(self) -> bool:
        return bool(self.document.get("complete"))

    @property
    def num_tasks(self) -> int:
        return self.strategies[0].score.shape[2] if self.strategies else 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ReportError(f"{path}: missing; is {path.parent} a run directory written by `lifelong run`?") from None
    except UnreadableFile as err:
        raise ReportError(str(err)) from None


def _check_document(path: Path, document: Any) -> None:
    """Raise :class:`ReportError` unless ``document`` has the shape ``lifelong run`` writes."""
    if not isinstance(document, dict):
        raise ReportError(f"{path}: not a results document (a JSON object); not written by `lifelong run`?")
    missing = [key for key in ("adapt_steps", "runs", "summary") if key not in document]
    if missing:
        raise ReportError(f"{path}: no {', '.join(missing)}; not written by `lifelong run`?")
    number = (int, float, type(None))
    problems = []
    if not isinstance(document["adapt_steps"], int) or document["adapt_steps"] < 0:
        problems.append("adapt_steps is not a count")
    if not isinstance(document["summary"], dict) or not all(isinstance(v, dict) for v in document["summary"].values()):
        problems.append("summary is not a table per strategy")
    if not isinstance(document["runs"], list):
        problems.append("runs is not a list")
    else:
        for i, run in enumerate(document["runs"]):
            if not isinstance(run, dict) or not {"strategy", "seed", "learn_seconds", "eval_seconds",
                                                 "peak_memory_mb"} <= set(run):
                problems.append(f"run {i} lacks its strategy, seed, timings or memory")
            elif not isinstance(run["strategy"], str) or not isinstance(run["seed"], int):
                problems.append(f"run {i} has a strategy that is not text or a seed that is not an integer")
            elif not all(isinstance(run[k], list) and all(isinstance(v, number) for v in run[k])
                         for k in ("learn_seconds", "eval_seconds", "peak_memory_mb")):
                problems.append(f"run {i} has timings or memory that are not lists of numbers")
            elif not isinstance(run.get("task_ids", []), list):
                problems.append(f"run {i} has task_ids that are not a list")
            elif run.get("loop") == "online" and (problem := _online_problem(run.get("online"))):
                problems.append(f"run {i} has {problem}")
        if len({isinstance(r, dict) and r.get("loop") == "online" for r in document["runs"]}) > 1:
            problems.append("runs of the online loop and of the task loop are mixed")
    if problems:
        raise ReportError(f"{path}: damaged ({'; '.join(problems[:3])})")


def _online_problem(online: Any) -> str | None:
    """What is wrong with an online run's ``online`` object, or None (the fields a report reads)."""
    if not isinstance(online, dict):
        return "no online object"
    names = lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v)  # noqa: E731
    if not names(online.get("pools")) or not names(online.get("columns")):
        return "online pools or columns that are not lists of names"
    if not isinstance(online.get("eval_batches"), list) or not all(
            isinstance(b, int) for b in online["eval_batches"]):
        return "online eval_batches that are not a list of batch indices"
    curve = online.get("recovery_curve")
    if not isinstance(curve, list) or not curve or not all(isinstance(v, (int, float, type(None))) for v in curve):
        return "an online recovery_curve that is not a list of numbers"
    return None


def is_online(document: dict[str, Any]) -> bool:
    """Whether a checked ``results.json`` holds runs of the online loop."""
    return any(run.get("loop") == "online" for run in document["runs"])


def _read_arrays(npz: Path) -> dict[str, np.ndarray]:
    try:
        return read_arrays(npz)
    except FileNotFoundError:
        raise ReportError(f"{npz}: missing") from None
    except UnreadableFile as err:
        raise ReportError(str(err)) from None


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; raise :class:`ReportError` naming the file when one is missing or bad.

    ``tensors.npz`` may hold arrays of a run that ``results.json`` does not list yet (a kill
    between the two commits): they are ignored, as the run is not finished for the report.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    config = _read_json(run_dir / "config.json")
    if not (run_dir / "results.json").exists():
        raise ReportError(f"{run_dir}: no run has finished there yet (results.json is written when the first "
                          f"one finishes); continue it with `lifelong run ... --out {run_dir} --resume`")
    document = _read_json(run_dir / "results.json")
    _check_document(run_dir / "results.json", document)
    npz = run_dir / "tensors.npz"
    arrays = _read_arrays(npz)
    regression = document.get("kind") == "regression"
    K = document["adapt_steps"]
    online = is_online(document)
    if online and len({(tuple(r["online"]["pools"]), tuple(r["online"]["columns"])) for r in document["runs"]}) > 1:
        raise ReportError(f"{run_dir / 'results.json'}: damaged (its runs disagree on the online pools or columns)")
    # an online run stores its anytime tensor under its own name (and again as acc/loss for older readers)
    tensor = ("anytime_" if online else "") + ("loss" if regression else "acc")

    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in document["runs"]:
        by_label.setdefault(run["strategy"], []).append(run)
    strategies = []
    for label, runs in by_label.items():
        scores = []
        for run in runs:
            key = f"{label}/seed{run['seed']}/{tensor}"
            if key not in arrays:
                raise ReportError(f"{npz}: no array {key!r} for a run listed in results.json")
            score = -arrays[key] if regression else arrays[key]
            if score.ndim != 3 or score.shape[2] != K + 1 or not np.issubdtype(score.dtype, np.floating):
                raise ReportError(f"{npz}: array {key!r} has shape {score.shape} ({score.dtype}); expected "
                                  f"(rows, tasks, {K + 1}) floats")
            if online:
                _check_anytime(npz, key, score.shape, run["online"])
            elif run.get("task_ids") and score.shape[0] != score.shape[1] + 1:
                from simulator.recurring import reduce_recurring

                score = reduce_recurring(score, run["task_ids"])
            if scores and score.shape != scores[0].shape:
                raise ReportError(f"{npz}: the seeds of {label!r} have tensors of different shapes")
            scores.append(score)
        strategies.append(StrategyRuns(
            label=label, seeds=tuple(int(r["seed"]) for r in runs), score=np.stack(scores).astype(float),
            learn_seconds=tuple(tuple(r["learn_seconds"]) for r in runs),
            eval_seconds=tuple(tuple(r["eval_seconds"]) for r in runs),
            peak_memory_mb=tuple(tuple(r["peak_memory_mb"]) for r in runs),
            online=_online_runs(npz, arrays, label, runs) if online else None))
    if online and len({s.online.scores.shape[1] for s in strategies}) > 1:
        raise ReportError(f"{npz}: the strategies have online streams of different lengths")
    try:  # the finished runs' CSV logs, for the training curves
        logs = read_run_logs(run_dir, [(s.label, seed) for s in strategies for seed in s.seeds])
    except LogError as err:
        raise ReportError(str(err)) from None
    return RunData(run_dir.resolve().name, config, document, tuple(strategies), logs)


def _check_anytime(npz: Path, key: str, shape: tuple[int, ...], online: dict[str, Any]) -> None:
    H, J = len(online["eval_batches"]), len(online["columns"])
    if shape[:2] != (H, J):
        raise ReportError(f"{npz}: array {key!r} has shape {shape}; expected ({H}, {J}, {shape[2]}): one row per "
                          f"evaluation and one column per evaluation column that results.json lists")


_ONLINE_ARRAYS = (("online_correct", "f", "score"), ("online_pool", "iu", "pool index"),
                  ("online_switch", "b", "switch flag"))


def _online_runs(npz: Path, arrays: dict[str, np.ndarray], label: str, runs: list[dict[str, Any]]) -> OnlineRuns:
    """The per-batch records of every seed of ``label``, checked against the file contract."""
    online = runs[0]["online"]
    records: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in _ONLINE_ARRAYS}
    for run in runs:
        for name, kinds, what in _ONLINE_ARRAYS:
            key = f"{label}/seed{run['seed']}/{name}"
            if key not in arrays:
                raise ReportError(f"{npz}: no array {key!r} for a run listed in results.json")
            array = arrays[key]
            if array.ndim != 1 or array.dtype.kind not in kinds or array.size == 0:
                raise ReportError(f"{npz}: array {key!r} has shape {array.shape} ({array.dtype}); expected one "
                                  f"{what} per batch")
            records[name].append(array)
        if len({records[name][-1].size for name in records}) > 1:
            raise ReportError(f"{npz}: the online arrays of {label!r} seed {run['seed']} differ in length")
        pools = records["online_pool"][-1]
        if pools.min() < 0 or pools.max() >= len(online["pools"]):
            raise ReportError(f"{npz}: array '{label}/seed{run['seed']}/online_pool' holds pool indices outside "
                              f"0..{len(online['pools']) - 1} (results.json lists {len(online['pools'])} pools)")
    if len({a.size for a in records["online_correct"]}) > 1:
        raise ReportError(f"{npz}: the seeds of {label!r} have online streams of different lengths")
    return OnlineRuns(
        scores=np.stack(records["online_correct"]).astype(float),
        pools=np.stack(records["online_pool"]).astype(np.int64), switches=np.stack(records["online_switch"]),
        pool_names=tuple(online["pools"]), column_names=tuple(online["columns"]),
        eval_batches=tuple(online["eval_batches"]), recovery_batches=len(online["recovery_curve"]))


def to_display(values, regression: bool):
    """Scores in the reader's unit: accuracy unchanged, minus the MSE back to the MSE."""
    return -np.asarray(values, dtype=float) if regression else np.asarray(values, dtype=float)


def mean_ci(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% confidence half-width (Student's t) over ``axis`` (the seeds).

    Non-finite values become NaN first (a diverged number is shown as missing, never as a
    bar to infinity). With one seed the half-width is NaN.
    """
    values = np.asarray(values, dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    half = metrics.t_quantile_975(n - 1) * values.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, half


def per_seed_cost(runs: StrategyRuns) -> dict[str, np.ndarray]:
    """Per seed: mean learn seconds per task, mean evaluation seconds per row, the whole run's
    learn and evaluation seconds (``total_seconds``), peak memory (MB)."""
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    return {
        "learn_seconds": np.array([mean(s) for s in runs.learn_seconds]),
        "eval_seconds": np.array([mean(s) for s in runs.eval_seconds]),
        "total_seconds": np.array([np.array([*learn, *evaluation], dtype=float).sum()  # a null (None) -> NaN
                                   for learn, evaluation in zip(runs.learn_seconds, runs.eval_seconds)]),
        "peak_memory_mb": np.array([max(s) if s else math.nan for s in runs.peak_memory_mb]),
    }


def adaptation_curves(score: np.ndarray) -> dict[str, np.ndarray]:
    """Score against adaptation steps, per seed, averaged over tasks; each of shape (seeds, K+1).

    ``new``: R[j, j, k], task j before it is learned; ``just_learned``: R[j+1, j, k];
    ``old``: R[T, j, k] for j < T-1, the old tasks at the end (NaN when T = 1).

    Args:
        score: shape (seeds, T+1, T, K+1).
    """
    score = np.asarray(score, dtype=float)
    T = score.shape[2]
    j = np.arange(T)
    new = score[:, j, j, :].mean(axis=1)
    just = score[:, j + 1, j, :].mean(axis=1)
    old = score[:, T, : T - 1, :].mean(axis=1) if T > 1 else np.full_like(new, np.nan)
    return {"new": new, "just_learned": just, "old": old}


def stat(summary: dict[str, Any], key: str, metric: str) -> tuple[float, float]:
    """(mean, ci95) of ``metric`` in a ``results.json`` aggregate; NaN for what is missing."""
    entry = summary.get(key, {}).get(metric) or {}
    value = lambda v: math.nan if v is None else float(v)  # noqa: E731
    return value(entry.get("mean")), value(entry.get("ci95"))


def online_stats(runs: StrategyRuns) -> dict[str, np.ndarray]:
    """Per seed, the online metrics of one strategy of an online run, recomputed from its
    per-batch records and anytime tensors (scores: higher is better).

    Returns:
        ``online_accuracy`` (seeds,), ``by_pool`` (seeds, pools), ``recovery_curve``
        (seeds, n), ``recovery_auc`` (seeds,), ``forgetting`` and ``forgetting_kK`` (seeds,),
        the anytime forgetting at k = 0 and k = K, and ``ood_drop`` (seeds,), the drop from
        :func:`~simulator.online_metrics.reference_pool` to the other pools.
    """
    online = runs.online
    K = runs.score.shape[-1] - 1
    cumulative = [online_metrics.cumulative_accuracy(scores, pools, online.pool_names)
                  for scores, pools in zip(online.scores, online.pools)]
    curves = np.array([online_metrics.recovery_curve(scores, switches, online.recovery_batches)
                       for scores, switches in zip(online.scores, online.switches)])
    reference = online_metrics.reference_pool(online.pool_names)
    return {
        "online_accuracy": np.array([c["total"] for c in cumulative]),
        "by_pool": np.array([[c["by_pool"][name] for name in online.pool_names] for c in cumulative]),
        "recovery_curve": curves,
        "recovery_auc": np.array([online_metrics.recovery_auc(curve) for curve in curves]),
        "forgetting": np.array([online_metrics.anytime_forgetting(A, 0) for A in runs.score]),
        "forgetting_kK": np.array([online_metrics.anytime_forgetting(A, K) for A in runs.score]),
        "ood_drop": np.array([online_metrics.out_of_distribution_drop(c["by_pool"], reference) for c in cumulative]),
    }


def smoothing_window(length: int) -> int:
    """The moving-average window of an online accuracy curve: a hundredth of the stream."""
    return max(1, length // 100)


def moving_average(values, window: int) -> np.ndarray:
    """The trailing mean over the last ``window`` values along the last axis (over the values
    so far at the start), same shape as ``values``. A window holding a non-finite value is NaN,
    so a diverged stretch shows as a gap rather than as a number.

    Example:
        >>> moving_average([1.0, 0.0, 1.0, 1.0], 2).tolist()
        [1.0, 0.5, 0.5, 1.0]
    """
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values)
    pad = [(0, 0)] * (values.ndim - 1) + [(1, 0)]
    sums = np.pad(np.cumsum(np.where(bad, 0.0, values), axis=-1), pad)
    bads = np.pad(np.cumsum(bad, axis=-1), pad)
    end = np.arange(1, values.shape[-1] + 1)
    start = np.maximum(end - window, 0)
    return np.where(bads[..., end] > bads[..., start], np.nan, (sums[..., end] - sums[..., start]) / (end - start))
