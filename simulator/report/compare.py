"""A versus B: the one-line answers at k = 0 and k = K, and the table of paired differences.

Every number here is recomputed per seed from the evaluation tensors (or, for a run whose
tensors lack the (T+1, T) shape, read from ``results.json``'s per-run metrics), so that two
strategies can be compared seed by seed: same seed, same stream and the same held-out
episodes. An :class:`Entry` is one strategy of one run directory; entries of several run
directories are compared when their runs have the same scenario and evaluation settings.

Which metrics mean nothing for a strategy (:func:`skipped`) follows from the metric
definitions (docs/design.md, "Metrics"); such a metric is named with its reason instead of ranked:

- **No prediction without a support set.** If R[i, j, k] is the same in every row i (for
  every seed, wherever both cells were scored), learning never changed a score at this k:
  the strategy predicts only from a support set (Matching Networks at k = 0), and every
  metric of R[:, :, k] is meaningless.
- **Forward transfer of a memory-only state.** An embedding strategy whose k = 0 state holds
  no support set (``EmbeddingStrategy`` without ``needs_support``: protomemory, matching)
  predicts at k = 0 from its memory of learned classes at most. On a stream whose tasks bring
  new classes (``scenario.protocol`` class- or task-incremental), R[j, j, 0] and R[0, j, 0],
  both taken before task j is learned, have no prediction for task j: its FWT at k = 0 is
  zero by construction. (On a domain-incremental stream every task has the classes already in
  memory, so the FWT stands; SNAIL and LEO condition even their k = 0 state on the episode's
  support set, so their k = 0 metrics stand.)
- **Nothing to forget.** Forgetting and BWT measure a drop from the score right after
  learning each task, R[j+1, j, k]. When that score is no better than chance, taken as the
  untrained and unadapted model's R[0, j, 0] (the mean of the gains R[j+1, j, k] - R[0, j, 0]
  over seeds and tasks is <= 0, or their 95% interval reaches 0), nothing was learned at this k
  that could be forgotten.
- **Steps to threshold on a loss.** ``steps_to_threshold`` (least k reaching 90% of the k = K
  score) assumes non-negative scores, so it is not shown for regression (minus the MSE).

Example:
    >>> mean, ci, n = paired_difference({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.5, 1: 0.5, 2: 0.5})
    >>> round(mean, 3), round(ci, 3), n
    (0.3, 0.248, 3)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from simulator import metrics
from simulator.report.data import ReportError, RunData, StrategyRuns, mean_ci, per_seed_cost, to_display


@dataclass(frozen=True)
class Metric:
    """A metric of the answers and the pairwise table.

    Attributes:
        key: a metric of :func:`simulator.metrics.summarize`, ``steps_new`` / ``steps_old``
            (steps to threshold, :func:`step_summaries`) or the cost ``learn_seconds``.
        title: the answer's title (classification, regression); ``{K}`` stands for K.
        header: the table header (classification, regression).
        better: ``"higher"``, ``"lower"``, or ``"level"`` (a score: higher accuracy, lower MSE).
        per_k: whether the metric depends on k (the matrix metrics) or not (adaptation, cost).
    """

    key: str
    title: tuple[str, str]
    header: tuple[str, str]
    better: str
    per_k: bool

    def lower_is_better(self, regression: bool) -> bool:
        return self.better == "lower" or (self.better == "level" and regression)


def scalar_metric(key: str, title: tuple[str, str]) -> Metric:
    """The answer of the scalar metric ``key`` of :data:`simulator.metrics.METRICS`, titled ``title``."""
    info = metrics.METRICS[key]
    return Metric(key, title, (info.header, info.header_regression), info.better, info.per_k)


FINAL = scalar_metric("final_accuracy", ("Highest final accuracy", "Lowest final MSE"))
FORGETTING = scalar_metric("forgetting", ("Least forgetting",) * 2)
BWT = scalar_metric("backward_transfer", ("Best backward transfer",) * 2)
FWT = scalar_metric("forward_transfer", ("Most forward transfer",) * 2)
NEW_ADAPT = scalar_metric("new_task_adaptation", ("Best few-shot adaptation to new tasks (mean over k = 0..{K})",) * 2)
RECOVERY = scalar_metric("recovery_adaptation", ("Best recovery of old tasks (mean over k = 0..{K})",) * 2)
STEPS_NEW = Metric("steps_new", ("Fastest adaptation to new tasks (steps to 90% of the k = {K} score)",) * 2,
                   ("Steps to 90%, new",) * 2, "lower", False)
STEPS_OLD = Metric("steps_old", ("Fastest re-adaptation to old tasks (steps to 90% of the k = {K} score)",) * 2,
                   ("Steps to 90%, old",) * 2, "lower", False)
COST = Metric("learn_seconds", ("Cheapest to train (seconds per task)",) * 2, ("Learn s / task",) * 2, "lower",
              False)

ANSWER_METRICS_K = (FINAL, FORGETTING, FWT)
"""The answers given at k = 0 and again at k = K."""
ANSWER_METRICS_ANY_K = (NEW_ADAPT, RECOVERY, STEPS_NEW, COST)
"""The answers that do not depend on k (adaptation over k = 0..K, cost)."""
PAIRWISE_METRICS_K = (FINAL, FORGETTING, BWT, FWT)
PAIRWISE_METRICS_ANY_K = (NEW_ADAPT, RECOVERY, STEPS_NEW, STEPS_OLD, COST)
STEP_KEYS = ("steps_new", "steps_old")
TWO_TASK_KEYS = (*(key for key, info in metrics.METRICS.items() if info.needs_two_tasks), "steps_old")
"""The metrics that need two tasks or more (NaN when T = 1, by definition)."""
MATRIX_KEYS = tuple(key for key in metrics.METRICS if key in metrics.MATRIX_METRICS)
"""The metrics of R = score[:, :, k] that reports show (the others do not depend on k)."""
_FORGET_KEYS = ("forgetting", "backward_transfer")


@dataclass(frozen=True)
class Entry:
    """One strategy of one run directory, as the answers and pairwise table compare it.

    Attributes:
        name: as shown: the label, or ``label [directory]`` where labels repeat across runs.
        seeds: the seeds, in the order of ``values``.
        values: per k (0 and K), per metric, one value per seed in display units (accuracy,
            or the MSE for regression: the ``level`` metrics), NaN where not computable.
        skipped: per k, per metric, why the metric means nothing for this strategy.
        regression: whether the stream is a regression one.
        adapt_steps: K.
        num_tasks: T (the metrics of two tasks or more are NaN when T = 1).
    """

    name: str
    seeds: tuple[int, ...]
    values: dict[int, dict[str, np.ndarray]]
    skipped: dict[int, dict[str, str]] = field(default_factory=dict)
    regression: bool = False
    adapt_steps: int = 0
    num_tasks: int = 0

    def per_seed(self, metric: Metric, k: int) -> dict[int, float]:
        """``{seed: value}`` of one metric at k (k is ignored for the k-independent ones)."""
        return dict(zip(self.seeds, (float(v) for v in self.values[k if metric.per_k else 0][metric.key])))

    def reason(self, metric: Metric, k: int) -> str | None:
        """Why ``metric`` means nothing for this strategy at k, or None."""
        return self.skipped.get(k if metric.per_k else 0, {}).get(metric.key)

    def stat(self, metric: Metric, k: int) -> tuple[float, float]:
        """(mean, ci95) over seeds in display units."""
        mean, ci = mean_ci(self.values[k if metric.per_k else 0][metric.key])
        return float(mean), float(ci)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """(mean, ci95, pairs) of :func:`simulator.metrics.paired_difference`."""
    d = metrics.paired_difference(a, b)
    return d["mean"], d["ci95"], d["n"]


def step_summaries(score) -> dict[str, float]:
    """``steps_new`` (:func:`simulator.metrics.new_task_steps`) and ``steps_old``
    (:func:`simulator.metrics.recovery_steps`) of one (T+1, T, K+1) score tensor."""
    return {"steps_new": metrics.new_task_steps(score), "steps_old": metrics.recovery_steps(score)}


def _seed_values(run: RunData, s: StrategyRuns, k: int) -> dict[str, np.ndarray]:
    """Per metric, one value per seed of ``s`` at k, in score units (higher is better)."""
    if run.square:
        rows = [{**metrics.summarize(score, k), **step_summaries(score)} for score in s.score]
    else:  # rows are not tasks learned: only results.json's own per-run metrics are known
        by_seed = {r["seed"]: r.get("metrics", {}).get(f"k{k}", {}) for r in run.document["runs"]
                   if r["strategy"] == s.label}
        rows = [by_seed.get(seed, {}) for seed in s.seeds]
    keys = [m.key for m in (*PAIRWISE_METRICS_K, *PAIRWISE_METRICS_ANY_K) if m is not COST] + ["learning_accuracy"]
    value = lambda v: math.nan if v is None else float(v)  # noqa: E731
    return {key: np.array([value(row.get(key)) if not isinstance(row.get(key), list) else math.nan
                           for row in rows]) for key in keys}


def _display(values: dict[str, np.ndarray], regression: bool) -> dict[str, np.ndarray]:
    level = {m.key for m in (*PAIRWISE_METRICS_K, *PAIRWISE_METRICS_ANY_K) if m.better == "level"}
    return {key: to_display(v, regression) if key in level else v for key, v in values.items()}


NEW_CLASS_PROTOCOLS = ("class-incremental", "task-incremental")
"""Protocols whose every task brings classes no earlier task had."""


def strategy_kind(run: RunData, label: str) -> str | None:
    """``"memory"`` when the strategy behind ``label`` is a registered embedding strategy whose
    k = 0 state has no support set (``EmbeddingStrategy`` without ``needs_support``), else None.

    Only registered names are looked up (a user's ``module:Class`` is never imported by a report).
    """
    name = run.config.get("strategies", {}).get(label, {}).get("strategy", label)
    try:
        import strategies
        from strategies.embedding import EmbeddingStrategy

        if name not in strategies.available():
            return None
        cls = strategies.strategy_class(name)
    except Exception:  # noqa: BLE001 - a strategy that cannot be loaded here is judged by its numbers alone
        return None
    return "memory" if issubclass(cls, EmbeddingStrategy) and not cls.needs_support else None


def skipped(score: np.ndarray | None, k: int, kind: str | None, regression: bool) -> dict[str, str]:
    """Why each metric means nothing for one strategy at k (the rules of this module's docstring).

    Args:
        score: shape (seeds, T+1, T, K+1) in score units, or None when its rows are not tasks
            learned (the rules on R then do not apply).
        k: the adaptation step.
        kind: ``"memory"`` when the strategy has no prediction at k = 0 for a task it has not
            learned (:func:`strategy_kind` on a stream of :data:`NEW_CLASS_PROTOCOLS`), else None.
        regression: whether scores are minus the MSE.

    Example:
        >>> score = np.zeros((2, 3, 2, 1)); score[:, 1:, :, 0] = 0.5  # untrained 0, learned 0.5
        >>> skipped(score, 0, None, False)
        {}
        >>> score[:, :, :, 0] = 0.2  # every row the same: learning changed nothing at k = 0
        >>> sorted(skipped(score, 0, None, False))[:2]
        ['average_incremental_accuracy', 'backward_transfer']
    """
    out: dict[str, str] = {}
    if regression:
        why = "steps to threshold assume non-negative scores; not defined for the MSE"
        out.update({key: why for key in STEP_KEYS})
    if score is None or score.shape[1] < 2:
        return out
    R = score[..., k]
    # compared where both cells were scored: an evaluation may leave cells out (NaN)
    first = np.broadcast_to(R[:, :1], R.shape)
    both = np.isfinite(R) & np.isfinite(first)
    if both[:, 1:].any() and np.all((R == first) | ~both):
        why = (f"no prediction at k = {k}: its scores are the same before and after learning every task, in "
               "every seed (it predicts only from a support set)")
        out.update({key: why for key in MATRIX_KEYS})
        return out
    if kind == "memory" and k == 0:
        out["forward_transfer"] = ("zero by construction at k = 0: without a support set it predicts only the "
                                   "classes in its memory of learned tasks, so a task has no prediction before "
                                   "it is learned")
    # the untrained, unadapted score is the chance level: what a model that learned nothing gets.
    # The gains are pooled over seeds and tasks: with the usual 2-3 seeds an interval over seeds
    # alone is too wide to tell a learner from chance.
    T = R.shape[2]
    chance = score[:, 0, :, 0]
    gains = np.array([r[j + 1, j] - c[j] for r, c in zip(R, chance) for j in range(T)])
    gains = gains[np.isfinite(gains)]  # an unscored cell is left out
    mean, ci = (float(v) for v in mean_ci(gains)) if gains.size else (math.nan, math.nan)
    if math.isfinite(mean) and (mean <= 0 or (math.isfinite(ci) and mean - ci <= 0)):
        learned = float(np.nanmean([[r[j + 1, j] for j in range(T)] for r in R]))
        unit = "MSE" if regression else "accuracy"
        why = (f"nothing to forget at k = {k}: right after learning each task its {unit} "
               f"({_num(float(to_display(learned, regression)))}) is no better than the untrained model's at k = 0 "
               f"({_num(float(to_display(np.nanmean(chance), regression)))}, chance)"
               + (" within the 95% interval over seeds and tasks" if math.isfinite(ci) else ""))
        out.update({key: why for key in _FORGET_KEYS})
    return out


def _num(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def run_entries(run: RunData, names: dict[str, str] | None = None) -> list[Entry]:
    """The entries of one run of the task loop (none for an online run), named by ``names``
    (label to shown name; default the label itself)."""
    if run.online:
        return []
    K = run.adapt_steps
    entries = []
    new_classes = run.config.get("scenario", {}).get("protocol") in NEW_CLASS_PROTOCOLS
    for s in run.strategies:
        kind = strategy_kind(run, s.label) if new_classes else None
        values, skips = {}, {}
        for k in sorted({0, K}):
            raw = _seed_values(run, s, k)
            raw["learn_seconds"] = per_seed_cost(s)["learn_seconds"]
            skips[k] = skipped(s.score if run.square else None, k, kind, run.regression)
            values[k] = _display(raw, run.regression)
        entries.append(Entry((names or {}).get(s.label, s.label), s.seeds, values, skips, run.regression, K,
                             s.score.shape[2]))
    return entries


PAIRING_FIELDS = ("episodes", "shots", "query", "full_test", "adapt_steps")
"""The evaluation settings that define the held-out episodes and what k = K means; the others
(chunk size, which cells are scored) change what is computed, not a score."""


def comparable_key(run: RunData) -> str:
    """Runs with the same key compare seed by seed: the same scenario parameters but its
    ``data_root`` (hence the same stream per seed), the same :data:`PAIRING_FIELDS` of the
    evaluation (the same held-out episodes) and kind."""
    config = run.config
    evaluation = {k: v for k, v in (config.get("evaluation") or {}).items() if k in PAIRING_FIELDS}
    # where the data files live does not change them (their checksums are verified when read)
    scenario = {k: v for k, v in (config.get("scenario") or {}).items() if k != "data_root"}
    return json.dumps([scenario, evaluation, run.regression], sort_keys=True)


def comparable_groups(runs: Sequence[RunData]) -> list[list[int]]:
    """Indices of the runs of the task loop with a finished strategy, grouped by
    :func:`comparable_key` in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        if not run.online and run.strategies:
            groups.setdefault(comparable_key(run), []).append(index)
    return list(groups.values())


def entry_names(runs: Sequence[RunData]) -> list[dict[str, str]]:
    """Per run, each label's shown name: the label, or ``label [directory]`` when the label
    appears in another run of its comparable group (or the directory name repeats too:
    ``label [directory #n]``, n the run's position)."""
    names: list[dict[str, str]] = [{s.label: s.label for s in run.strategies} for run in runs]
    for group in comparable_groups(runs):
        labels = [s.label for i in group for s in runs[i].strategies]
        directories = [runs[i].directory for i in group]
        for i in group:
            where = runs[i].directory if directories.count(runs[i].directory) == 1 else f"{runs[i].directory} #{i + 1}"
            for s in runs[i].strategies:
                if labels.count(s.label) > 1:
                    names[i][s.label] = f"{s.label} [{where}]"
    return names


def parse_pairs(texts: Sequence[str]) -> list[tuple[str, str]]:
    """``["A,B", ...]`` (the ``--compare`` option) as pairs of names; ReportError for another form."""
    pairs = []
    for text in texts:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise ReportError(f"--compare {text!r}: give two different strategy names separated by a comma, "
                              "e.g. --compare maml,finetune")
        pairs.append((parts[0], parts[1]))
    return pairs


def select_pairs(entries: Sequence[Entry], wanted: Sequence[tuple[str, str]] | None) -> list[tuple[Entry, Entry]]:
    """The pairs to tabulate: every pair in order (A before B as listed) when ``wanted`` is None
    or empty, else the named ones whose two names are both among ``entries``."""
    if not wanted:
        return [(a, b) for i, a in enumerate(entries) for b in entries[i + 1:]]
    by_name = {e.name: e for e in entries}
    return [(by_name[a], by_name[b]) for a, b in wanted if a in by_name and b in by_name]


def check_pairs(groups: Sequence[list[Entry]], wanted: Sequence[tuple[str, str]]) -> None:
    """Raise :class:`ReportError` for a ``--compare`` name that no group holds, or a pair
    whose two strategies are in runs that do not compare (other scenario or evaluation)."""
    names = [e.name for entries in groups for e in entries]
    for a, b in wanted:
        for name in (a, b):
            if name not in names:
                raise ReportError(f"--compare {a},{b}: no strategy {name!r} in these run directories; valid names: "
                                  f"{', '.join(dict.fromkeys(names)) or 'none (no run of the task loop)'}")
        if not any({a, b} <= {e.name for e in entries} for entries in groups):
            raise ReportError(f"--compare {a},{b}: these two come from runs with different scenarios or "
                              "evaluation settings, so their seeds do not pair")
