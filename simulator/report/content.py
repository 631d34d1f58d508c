"""What a report says: sections, tables, answers and figures built from loaded run directories.

:func:`build` turns one run directory into a single-run report and several into a comparison
(strategies x scenarios) followed by each run in full. A run's summary opens with one-line
answers at k = 0 and k = K (:func:`answers`) and is followed by the paired differences of its
strategies (:func:`pairwise_tables`), both from :mod:`simulator.report.compare`; runs that pair
by seed are also compared across directories (:func:`across_runs`). Everything here is a function of
:class:`~simulator.report.data.RunData`; figures come from :mod:`simulator.report.figures`.
A run of the online loop gets its own sections (online accuracy over the stream, recovery
curves, the anytime tensor, the per-pool table) in place of the task-boundary ones, which
need rows taken at task boundaries.

Numbers are shown in the reader's unit: accuracy for classification, the MSE for regression
(score = -MSE inside); a pairwise difference A - B is taken in that unit. Differences keep
the "higher is better" sign of the score (BWT and FWT: positive is good; for regression that
is an MSE reduction), and forgetting stays "lower is better" (for regression, an MSE increase).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from simulator import metrics
from simulator.report import compare, figures
from simulator.files import to_json
from simulator.online_metrics import SHOWN_METRICS, reference_pool
from simulator.report.data import (RunData, StrategyRuns, adaptation_curves, mean_ci, moving_average, online_stats,
                                   per_seed_cost, smoothing_window, stat, to_display)
from simulator.report.compare import Entry, Metric
from simulator.report.document import Block, Bullets, Cell, Code, Figure, Report, Section, Span, Table, paragraph


@dataclass(frozen=True)
class Column:
    """A summary-table column.

    Attributes:
        key: a metric of ``results.json`` or a cost of :func:`per_seed_cost`.
        title, title_regression: the header for classification and for regression streams.
        better: ``"higher"``, ``"lower"``, or ``"level"`` (a score: higher accuracy, lower MSE).
        cost: whether ``key`` is a cost (time, memory) rather than a metric.
    """

    key: str
    title: str
    title_regression: str
    better: str
    cost: bool = False

    def header(self, regression: bool) -> str:
        title = self.title_regression if regression else self.title
        return f"{title} {'↓' if self.lower_is_better(regression) else '↑'}"

    def lower_is_better(self, regression: bool) -> bool:
        return self.better == "lower" or (self.better == "level" and regression)


def metric_column(key: str, table: dict[str, metrics.MetricInfo] = metrics.METRICS) -> Column:
    """The column of the metric ``key``, headed as ``table`` (:data:`simulator.metrics.METRICS`,
    or :data:`simulator.online_metrics.SHOWN_METRICS` for the online ones) says."""
    info = table[key]
    return Column(key, info.header, info.header_regression, info.better)


MATRIX_COLUMNS = tuple(metric_column(key) for key in metrics.MATRIX_METRICS)
ADAPTATION_COLUMNS = (metric_column("new_task_adaptation"), metric_column("recovery_adaptation"))
STEPS_COLUMNS = (
    Column("steps_new", "Steps to 90%, new", "Steps to 90%, new", "lower"),
    Column("steps_old", "Steps to 90%, old", "Steps to 90%, old", "lower"),
)
COST_COLUMNS = (
    Column("learn_seconds", "Learn s / task", "Learn s / task", "lower", cost=True),
    Column("eval_seconds", "Eval s / row", "Eval s / row", "lower", cost=True),
    Column("peak_memory_mb", "Peak memory MB", "Peak memory MB", "lower", cost=True),
)
SUMMARY_COLUMNS = MATRIX_COLUMNS + ADAPTATION_COLUMNS + STEPS_COLUMNS + COST_COLUMNS
COMPARISON_COLUMNS = (MATRIX_COLUMNS[0], MATRIX_COLUMNS[3], MATRIX_COLUMNS[4], MATRIX_COLUMNS[5],
                      ADAPTATION_COLUMNS[0], ADAPTATION_COLUMNS[1], COST_COLUMNS[0])
COMPARISON_FIGURE_ROWS = (MATRIX_COLUMNS[0], MATRIX_COLUMNS[5], MATRIX_COLUMNS[4])


def format_number(value: float, key: str = "") -> str:
    """A table number: 3 decimals for scores, 3 significant digits for seconds, whole MB."""
    if not math.isfinite(value):
        return "n/a"
    if key == "peak_memory_mb":
        return f"{value:.0f}"
    if key.endswith("seconds"):
        return f"{value:.3g}"
    text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"
    return text.lstrip("-") if float(text) == 0 else text  # no "-0.000" for a value that rounds to zero


def format_stat(mean: float, ci: float, key: str = "") -> str:
    """``mean ± ci`` (the ± part left out when there is no interval, e.g. with one seed)."""
    if not math.isfinite(mean):
        return "n/a"
    text = format_number(mean, key)
    return f"{text} ± {format_number(ci, key)}" if math.isfinite(ci) else text


def column_values(run: RunData, column: Column, k_key: str = "k0") -> list[tuple[float, float]]:
    """``(mean, ci95)`` per strategy of ``run`` in display units for one column."""
    out = []
    for s in run.strategies:
        if column.cost:
            out.append(tuple(float(v) for v in mean_ci(per_seed_cost(s)[column.key])))
            continue
        if column.key in compare.STEP_KEYS:  # not in results.json: from the tensors (k-independent)
            steps = [compare.step_summaries(score)[column.key] for score in s.score] if run.square else [math.nan]
            out.append((math.nan, math.nan) if run.regression else tuple(float(v) for v in mean_ci(steps)))
            continue
        mean, ci = stat(run.document.get("summary", {}).get(s.label, {}), k_key, column.key)
        if column.better == "level":
            mean = float(to_display(mean, run.regression))
        out.append((mean, ci))
    return out


def best_flags(values: Sequence[tuple[float, float]], column: Column, regression: bool) -> list[bool]:
    """Which entries hold the best mean of a column (ties, as displayed, all count); none when
    fewer than two entries have a number."""
    texts = [format_number(m, column.key) for m, _ in values]
    finite = [m for m, _ in values if math.isfinite(m)]
    if len(finite) < 2:
        return [False] * len(values)
    best = min(finite) if column.lower_is_better(regression) else max(finite)
    return [t == format_number(best, column.key) for t in texts]


def _table(labels: Sequence[str], columns: Sequence[Column], values: Sequence[list[tuple[float, float]]],
           regression: Sequence[bool] | bool, first: str = "Strategy", headers: Sequence[str] | None = None,
           caption: str = "", title: str = "", skipped: Sequence[Sequence[bool]] | None = None) -> Table:
    """Rows = labels; ``values[c][r]`` is column c's (mean, ci) for row r; ``skipped[c][r]``
    marks a value that means nothing for its strategy: shown with a †, never marked best."""
    per_column = regression if isinstance(regression, (list, tuple)) else [regression] * len(columns)
    skipped = skipped or [[False] * len(labels) for _ in columns]
    ranked = [[(math.nan, math.nan) if skip else v for v, skip in zip(vs, skips)] for vs, skips in zip(values, skipped)]
    flags = [best_flags(v, col, reg) for v, col, reg in zip(ranked, columns, per_column)]
    rows = []
    for r, label in enumerate(labels):
        cells = [Cell(label)]
        for c, column in enumerate(columns):
            mean, ci = values[c][r]
            text = format_stat(mean, ci, column.key) + (" †" if skipped[c][r] else "")
            cells.append(Cell(text, best=flags[c][r], numeric=True))
        rows.append(tuple(cells))
    header = headers or [col.header(reg) for col, reg in zip(columns, per_column)]
    return Table((first, *header), tuple(rows), caption, title)


def _ci_note(run: RunData) -> str:
    several_seeds = max(len(s.seeds) for s in run.strategies) > 1
    return ("mean ± 95% confidence half-width over seeds (Student's t)" if several_seeds
            else "one seed per strategy, so no confidence interval")


_DAGGER = (" †: not ranked, as the metric means nothing for that strategy at this k (the answers above "
           "say why).")


def summary_tables(run: RunData, entries: Sequence[Entry] = ()) -> list[Table]:
    """The summary table as learned (k = 0, with adaptation and costs) and after K steps;
    ``entries`` (:func:`compare.run_entries`, in the run's order) mark the values that mean
    nothing for their strategy."""
    labels = [s.label for s in run.strategies]
    K = run.adapt_steps
    reg = run.regression

    def marks(columns: Sequence[Column], k: int) -> list[list[bool]] | None:
        if not entries:
            return None
        return [[bool(e.skipped.get(k, {}).get(c.key)) for e in entries] for c in columns]

    first_marks, second_marks = marks(SUMMARY_COLUMNS, 0), marks(MATRIX_COLUMNS, K)
    first = _table(labels, SUMMARY_COLUMNS, [column_values(run, c) for c in SUMMARY_COLUMNS], reg,
                   title="As learned (k = 0)", skipped=first_marks,
                   caption=f"Cells: {_ci_note(run)}. Bold: best in its column (↑ higher is better, ↓ lower is "
                           "better)." + (_DAGGER if first_marks and any(map(any, first_marks)) else "") + " "
                           f"The adaptation columns are the mean score over k = 0..{K} adaptation steps (the "
                           "area under the adaptation curve) on new tasks before learning them and on old tasks "
                           "at the end. Steps to 90%: the least k whose score reaches 90% of the k = "
                           f"{K} score, on new tasks (R[j, j]) and on old tasks at the end (R[T, j], j < T-1); "
                           "not defined for the MSE. Time and memory are per seed, then averaged; on CPU, peak memory "
                           "is the "
                           "process's resident high-water mark, which never decreases, so a strategy run later in "
                           "the same process inherits the peaks of those before it.")
    if K == 0:
        return [first]
    second = _table(labels, MATRIX_COLUMNS, [column_values(run, c, f"k{K}") for c in MATRIX_COLUMNS], reg,
                    title=f"After {K} adaptation steps (k = {K})", skipped=second_marks,
                    caption=f"The same metrics on R = score[:, :, {K}]: each episode's model adapted {K} steps on "
                            "its support set before scoring the query set."
                            + (_DAGGER if second_marks and any(map(any, second_marks)) else ""))
    return [first, second]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    if not all(math.isfinite(x) for x in (*a, *b)):
        return None
    return abs(a[0] - b[0]) <= a[1] + b[1]


def _highlight(title: str, labels: Sequence[str], values: Sequence[tuple[float, float]], column: Column,
               regression: bool) -> tuple[Span, ...] | None:
    """``title: best (value); next runner-up (value) (verdict).``, or None with fewer than two
    numbers (the online answers, from means and intervals alone)."""
    order = sorted((i for i, (m, _) in enumerate(values) if math.isfinite(m)),
                   key=lambda i: values[i][0], reverse=not column.lower_is_better(regression))
    if len(order) < 2:
        return None
    best, second = order[0], order[1]
    if format_stat(*values[best], column.key) == format_stat(*values[second], column.key):
        verdict = "a tie"
    else:
        verdict = {None: "one seed, so no interval to judge by",
                   True: "within the 95% intervals: not a clear difference",
                   False: "the 95% intervals do not overlap"}[_overlap(values[best], values[second])]
    return (Span(f"{title}: ", "strong"),
            Span(labels[best], "code"), Span(f" {format_stat(*values[best], column.key)}; next "),
            Span(labels[second], "code"), Span(f" {format_stat(*values[second], column.key)} ({verdict})."))


def _verdict(a: Entry, b: Entry, metric: Metric, k: int) -> str:
    """Whether the first two of an answer differ: by the paired difference over their common
    seeds where there are two or more, else by whether their 95% intervals overlap."""
    mean, ci, n = compare.paired_difference(a.per_seed(metric, k), b.per_seed(metric, k))
    if n >= 2 and math.isfinite(mean) and math.isfinite(ci):
        text = f"paired difference {_signed(mean, metric.key)} ± {format_number(ci, metric.key)} over {n} seeds"
        return text + (": a clear difference" if abs(mean) > ci else ", whose interval includes 0: not a clear "
                                                                      "difference")
    return {None: "one seed, so no interval to judge by",
            True: "within the 95% intervals: not a clear difference",
            False: "the 95% intervals do not overlap"}[_overlap(a.stat(metric, k), b.stat(metric, k))]


def _answer(metric: Metric, k: int, entries: Sequence[Entry]) -> tuple[Span, ...] | None:
    """``title (k = ..): best value; next runner-up value (verdict). Not ranked: ... No value: ...``
    (the strategies whose value means nothing, with the reason, and those without a value);
    None for a metric of two tasks or more on a stream of one."""
    if metric.key in compare.TWO_TASK_KEYS and max(e.num_tasks for e in entries) < 2:
        return None  # not defined for one task: nothing to say
    regression = entries[0].regression
    left_out = [(e, e.reason(metric, k)) for e in entries if e.reason(metric, k)]
    ranked = [e for e in entries if not e.reason(metric, k) and math.isfinite(e.stat(metric, k)[0])]
    missing = [e for e in entries if not e.reason(metric, k) and not math.isfinite(e.stat(metric, k)[0])]
    ranked.sort(key=lambda e: e.stat(metric, k)[0], reverse=not metric.lower_is_better(regression))
    title = metric.title[regression].format(K=entries[0].adapt_steps) + (f" (k = {k})" if metric.per_k else "")
    spans = [Span(f"{title}: ", "strong")]
    if len(ranked) >= 2:
        best, second = ranked[0], ranked[1]
        shown = [format_stat(*e.stat(metric, k), metric.key) for e in (best, second)]
        verdict = "a tie" if shown[0] == shown[1] else _verdict(best, second, metric, k)
        spans += [Span(best.name, "code"), Span(f" {shown[0]}; next "), Span(second.name, "code"),
                  Span(f" {shown[1]} ({verdict}).")]
    elif ranked:
        spans += [Span("only "), Span(ranked[0].name, "code"),
                  Span(f" has a meaningful value: {format_stat(*ranked[0].stat(metric, k), metric.key)}.")]
    else:
        spans.append(Span("no strategy to rank."))
    for index, (e, reason) in enumerate(left_out):
        spans += [Span(" Not ranked: " if index == 0 else "; "), Span(e.name, "code"), Span(f", {reason}")]
    if left_out:
        spans.append(Span("."))
    if missing:  # said, so that a strategy never silently drops out of an answer
        spans.append(Span(" No value (a score it needs was not evaluated at this k, or is not finite): "))
        for index, e in enumerate(missing):
            spans += [Span(", " if index else ""), Span(e.name, "code")]
        spans.append(Span("."))
    return tuple(spans)


def answers(entries: Sequence[Entry]) -> list[Block]:
    """The one-line answers: final score, forgetting and forward transfer as learned (k = 0)
    and after adaptation (k = K), then adaptation (over k = 0..K, steps to threshold) and cost;
    each line names its k, and a metric that means nothing for a strategy (the rules of
    :mod:`simulator.report.compare`) names it with the reason instead of ranking it. Empty
    with fewer than two entries."""
    if len(entries) < 2:
        return []
    K = entries[0].adapt_steps
    blocks: list[Block] = []
    groups = [("As learned (k = 0):", compare.ANSWER_METRICS_K, 0)]
    if K:
        groups.append((f"After adaptation (k = {K}: each episode's model adapted {K} steps on its support set):",
                       compare.ANSWER_METRICS_K, K))
    groups.append((f"Adaptation (over k = 0..{K}) and cost:", compare.ANSWER_METRICS_ANY_K, 0))
    for heading, chosen, k in groups:
        items = [item for item in (_answer(m, k, entries) for m in chosen) if item]
        if items:
            blocks += [paragraph(Span(heading, "strong")), Bullets(tuple(items))]
    return blocks


def _signed(value: float, key: str = "") -> str:
    """A difference with its sign (``+0.052``, ``-0.010``, ``0.000``)."""
    text = format_number(value, key)
    return text if not math.isfinite(value) or text.lstrip("-").strip("0.") == "" or text.startswith("-") \
        else "+" + text


def pairwise_tables(pairs: Sequence[tuple[Entry, Entry]]) -> list[Table]:
    """The paired differences A - B of every metric, at k = 0 (with the k-independent
    adaptation, steps and cost columns) and at k = K: mean ± 95% half-width of the per-seed
    differences (Student's t over the seeds both have). Bold: the interval excludes 0."""
    if not pairs:
        return []
    regression, K = pairs[0][0].regression, pairs[0][0].adapt_steps
    tables = []
    for k, chosen in ((0, compare.PAIRWISE_METRICS_K + compare.PAIRWISE_METRICS_ANY_K),
                      *(((K, compare.PAIRWISE_METRICS_K),) if K else ())):
        rows = []
        for a, b in pairs:
            cells, seeds = [], 0
            for metric in chosen:
                reason = a.reason(metric, k) or b.reason(metric, k)
                mean, ci, n = compare.paired_difference(a.per_seed(metric, k), b.per_seed(metric, k))
                seeds = max(seeds, n)
                if reason:
                    cells.append(Cell("skipped", numeric=True))
                    continue
                text = _signed(mean, metric.key) + (f" ± {format_number(ci, metric.key)}" if math.isfinite(ci)
                                                    and math.isfinite(mean) else "")
                clear = math.isfinite(mean) and math.isfinite(ci) and abs(mean) > ci
                cells.append(Cell(text, best=clear, numeric=True))
            rows.append((Cell(f"{a.name} − {b.name}"), Cell(str(seeds), numeric=True), *cells))
        header = ("A − B", "Seeds paired",
                  *(f"{m.header[regression]} {'↓' if m.lower_is_better(regression) else '↑'}" for m in chosen))
        title = ("As learned (k = 0)" if k == 0 else f"After {K} adaptation steps (k = {K})") + ": A minus B"
        caption = ("Each cell: the mean over seeds of A's value minus B's on the same seed (same stream, same "
                   "held-out episodes) ± the 95% confidence half-width of those differences (Student's t); "
                   "bold: the interval excludes 0, a clear difference. The arrow is the metric's own direction, "
                   "so a difference in the arrow's direction favours A. skipped: the metric means nothing for "
                   "A or B at this k (see the answers above).")
        if k == 0:
            caption += (f" The adaptation columns (mean score over k = 0..{K}), steps to 90% of the k = {K} score "
                        "and learn seconds per task do not depend on k.")
        tables.append(Table(header, tuple(rows), caption, title))
    return tables


def _mean_matrix(s: StrategyRuns, k: int, regression: bool) -> np.ndarray:
    return to_display(mean_ci(s.score[..., k])[0], regression)


def _run_intro(run: RunData) -> list[Block]:
    """The opening of a run: what was run, warnings (failures, divergence, an incomplete
    run), and what the scores mean."""
    opening = _online_opening(run) if run.online else _opening(run)
    return [opening, *_warnings(run), _online_scores_note(run) if run.online else _scores_note(run)]


def _opening(run: RunData) -> Block:
    config, K, T = run.config, run.adapt_steps, run.num_tasks
    scenario = config.get("scenario", {})
    seeds = config.get("seeds", [])
    protocol = f"{scenario['protocol']} " if scenario.get("protocol") else ""
    return paragraph(
        "Scenario ", Span(run.scenario, "code"),
        f" ({protocol}{'regression' if run.regression else 'classification'}), {T} task{'' if T == 1 else 's'}, "
        "scores after "
        f"k = 0..{K} adaptation steps, seeds {', '.join(str(s) for s in seeds)}, "
        f"device {run.document.get('environment', {}).get('device', 'unknown')}. Run directory ",
        Span(run.directory, "code"), ".")


def _warnings(run: RunData) -> list[Block]:
    config = run.config
    seeds = config.get("seeds", [])
    blocks: list[Block] = []
    failures = run.document.get("failures") or []
    if failures:
        blocks.append(paragraph(
            f"{len(failures)} run(s) failed and are left out of every number below: "
            + "; ".join(f"{f.get('strategy')} seed {f.get('seed')}: {f.get('error')}" for f in failures) + ".",
            warning=True))
    tensor = "A[h, j, k]" if run.online else "R[i, j, k]"
    evaluation = config.get("evaluation", {})
    # an evaluation that scores only some cells leaves the others NaN: not a divergence
    sparse = not run.online and (evaluation.get("columns", "all") != "all" or evaluation.get("eval_every", 1) != 1
                                 or evaluation.get("adapt_cells", "all") != "all")
    bad = (lambda a: np.isinf(a)) if sparse else (lambda a: ~np.isfinite(a))  # noqa: E731
    unscored = [f"{s.label}: {int(np.isnan(s.score).sum())} of {s.score.size}" for s in run.strategies
                if sparse and np.isnan(s.score).any()]
    if unscored:
        blocks.append(paragraph(
            f"Cells of {tensor} not evaluated (evaluation.eval_every = {evaluation.get('eval_every', 1)}, columns = "
            f"{evaluation.get('columns', 'all')}, adapt_cells = {evaluation.get('adapt_cells', 'all')}), over all "
            "seeds: " + "; ".join(unscored) + ". A metric that reads one of them shows as n/a."))
    diverged = [f"{s.label}: {int(bad(s.score).sum())} of {s.score.size} cells of {tensor}"
                for s in run.strategies if bad(s.score).any()]
    diverged += [f"{s.label}: {int((~np.isfinite(s.online.scores)).sum())} of {s.online.scores.size} batch scores"
                 for s in run.strategies if s.online is not None and not np.isfinite(s.online.scores).all()]
    if diverged:
        blocks.append(paragraph(
            "Some scores are not finite (an adaptation or a training step diverged), over all seeds: "
            + "; ".join(diverged) + ". A mean over seeds that includes one shows as n/a.", warning=True))
    if not run.complete:
        finished = sum(len(s.seeds) for s in run.strategies) + len(failures)
        planned = len(config.get("strategies", {})) * len(seeds)
        missing = [label for label in config.get("strategies", {}) if label not in {s.label for s in run.strategies}]
        blocks.append(paragraph(
            f"Incomplete: the run is still going or stopped early, after {finished} of {planned} (strategy, seed) "
            "runs; everything below covers the finished runs only."
            + (f" No finished run yet for: {', '.join(missing)}." if missing else ""), warning=True))
    return blocks


def _scores_note(run: RunData) -> Block:
    config = run.config
    scored_on = ("each task's whole test pool (k > 0: after adapting on support sets from its training pool)"
                 if config.get("evaluation", {}).get("full_test") else "each episode's query set")
    return paragraph(
        "Scores are " + (f"the MSE on {scored_on} (lower is better); "
                         if run.regression else f"accuracy on {scored_on} (higher is better); ")
        + "R[i, j, k] is the score on task j after learning tasks 0..i-1 (row 0: untrained) and k "
        "adaptation steps. BWT and FWT divide by T-1 (the GEM paper; its code divides by T); "
        "forgetting is max-based (Chaudhry et al. 2018)"
        + ("; for regression BWT and FWT are MSE reductions (positive is good) and forgetting an "
           "MSE increase." if run.regression else "."))


def _strategy_label(run: RunData) -> list[str]:
    return [s.label for s in run.strategies]


def _figure(draw: bool, name: str, render: Callable[[], bytes], alt: str, caption: str, panels: int = 1) -> Block:
    """The figure, or with ``draw`` false a note in its place (the quick report rewritten after
    each finished run of an experiment stays cheap by drawing nothing). ``panels``: its number
    of axes, the measure of its drawing cost (figures with more are drawn first)."""
    if not draw:
        return paragraph(f"Not drawn yet: {alt[0].lower()}{alt[1:]}. Figures are drawn when the run completes, "
                         "or at any time with ", Span("lifelong report RUN_DIR", "code"), ".")
    return Figure(name, render, alt, caption, cost=panels)  # drawn with the report's others (document.drawn)


def _heatmap_section(run: RunData, prefix: str, draw: bool) -> Section:
    K, reg = run.adapt_steps, run.regression
    blocks: list[Block] = []
    for k in (0, K) if K else (0,):
        matrices = [(s.label, _mean_matrix(s, k, reg)) for s in run.strategies]
        blocks.append(_figure(
            draw, f"{prefix}heatmap-k{k}", lambda m=matrices, k=k: figures.heatmaps(m, reg, k),
            f"Heatmaps of R at k = {k}, one per strategy",
            f"R[i, j] at k = {k} ({'as learned' if k == 0 else 'after adaptation'}), mean over seeds: row i after "
            "learning i tasks (row 0 untrained), column j the task evaluated. Outlined: each task right "
            "after it was learned; below the outline is memory of old tasks, above it transfer to future ones.",
            panels=len(matrices) + 1))
    return Section(f"{prefix}matrix", "Accuracy matrix R" if not reg else "MSE matrix R", tuple(blocks))


_NEEDS_ORDER = ("Needs each task's first position in the stream: this run's tensors have more rows than "
                "tasks (recurring tasks) and results.json does not give the runs' task_ids.")


def _stream_section(run: RunData, prefix: str, draw: bool) -> Section:
    if not run.square:
        return Section(f"{prefix}stream", "Each task along the stream", (paragraph(_NEEDS_ORDER),))
    reg = run.regression
    matrices = [(s.label, _mean_matrix(s, 0, reg)) for s in run.strategies]
    figure = _figure(draw, f"{prefix}stream", lambda: figures.stream_lines(matrices, reg),
                     "Score of each task along the stream, one panel per strategy",
                     "Each task's score (k = 0, mean over seeds) after each number of tasks learned; dashed "
                     "before the task is learned, solid after, a dot where it was learned.", panels=len(matrices))
    return Section(f"{prefix}stream", "Each task along the stream", (figure,))


def _curves(run: RunData) -> list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Per strategy, ``{panel: (mean, ci95)}`` over seeds in display units (an interval's width
    needs no conversion)."""
    out = []
    for s in run.strategies:
        by_panel = {}
        for key, per_seed in adaptation_curves(s.score).items():
            mean, ci = mean_ci(per_seed)
            by_panel[key] = (to_display(mean, run.regression), ci)
        out.append((s.label, by_panel))
    return out


def _adaptation_section(run: RunData, prefix: str, curves, draw: bool, colours: dict[str, str]) -> Section:
    if not run.square:
        return Section(f"{prefix}adaptation", "Adaptation curves", (paragraph(_NEEDS_ORDER),))
    K = run.adapt_steps
    seeds = max(len(s.seeds) for s in run.strategies)
    figure = _figure(draw, f"{prefix}adaptation", lambda: figures.adaptation_curves(curves, run.regression, colours),
                     "Adaptation curves: score against adaptation steps",
                     f"Score after k = 0..{K} adaptation steps on each episode's support set, averaged over "
                     "tasks: new tasks before they are learned (R[j, j, k]), each task right after learning "
                     "it (R[j+1, j, k]) and the old tasks at the end (R[T, j, k], j < T-1). "
                     + ("Bands: 95% confidence interval over seeds, clipped to the score's range." if seeds > 1
                        else "One seed, so no confidence band."), panels=3)
    return Section(f"{prefix}adaptation", "Adaptation curves", (figure,))


def _transfer_values(run: RunData) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    K = run.adapt_steps
    out = {}
    for column in (MATRIX_COLUMNS[5], MATRIX_COLUMNS[4]):
        out[column.key] = {}
        for name, k_key in (("k0", "k0"), ("kK", f"k{K}")):
            values = column_values(run, column, k_key)
            out[column.key][name] = (np.array([m for m, _ in values]), np.array([c for _, c in values]))
    return out


def _transfer_section(run: RunData, prefix: str, draw: bool, colours: dict[str, str]) -> Section:
    if run.num_tasks < 2:
        return Section(f"{prefix}transfer", "Forgetting and forward transfer", (paragraph(
            "Forgetting and forward transfer need a stream of at least two tasks; this one has one."),))
    values = _transfer_values(run)
    figure = _figure(draw, f"{prefix}transfer",
                     lambda: figures.transfer_bars(_strategy_label(run), values, run.regression, run.adapt_steps,
                                                   colours),
                     "Forgetting and forward transfer per strategy with 95% error bars",
                     "Forgetting (left, lower is better) and forward transfer (right, higher is better) per "
                     "strategy, as learned (solid) and after adaptation (light); error bars and ± values: "
                     "95% confidence interval over seeds.", panels=2)
    return Section(f"{prefix}transfer", "Forgetting and forward transfer", (figure,))


def _kv_table(pairs: Sequence[tuple[str, Any]], caption: str = "") -> Table:
    return Table(("Field", "Value"), tuple((Cell(str(k)), Cell(_value_text(v))) for k, v in pairs), caption,
                 compact=True)


def _value_text(value: Any) -> str:
    """A configuration value as written in ``config.json`` (strings without quotes)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _config_section(run: RunData, prefix: str) -> Section:
    config = run.config
    scenario = dict(config.get("scenario", {}))
    strategies = config.get("strategies", {})
    rows = []
    for label, table in strategies.items():
        table = dict(table)
        name = table.pop("strategy", label)
        model = table.pop("model", {})
        params = ", ".join(f"{k}={_value_text(v)}" for k, v in table.items())
        model_text = ", ".join(f"{k}={_value_text(v)}" for k, v in model.items())
        rows.append((Cell(label), Cell(str(name)), Cell(params), Cell(model_text)))
    blocks: list[Block] = [
        _kv_table([("experiment", config.get("name")), ("seeds", config.get("seeds")),
                   ("device (asked)", config.get("device")), ("threads", config.get("threads"))],
                  "The experiment."),
        _kv_table(list(scenario.items()), "The scenario (stream) and its parameters."),
        _kv_table(list(config.get("evaluation", {}).items()),
                  "Evaluation: held-out episodes per task, adaptation steps K, shots and query size."),
        Table(("Label", "Strategy", "Parameters", "Model"), tuple(rows), "Strategies and their parameters."),
        Code(json.dumps(config, indent=2, ensure_ascii=False), "config.json (the resolved experiment)", "json"),
    ]
    environment = run.document.get("environment", {})
    env_rows = list(environment.items()) + [("seeds", config.get("seeds")),
                                            ("complete", "yes" if run.complete else "no (stopped early)")]
    env = Section(f"{prefix}environment", "Environment",
                  (_kv_table(env_rows, "Versions, device and threads of the machine that ran the experiment. "
                                       "Peak memory is the process's resident high-water mark on CPU "
                                       "(it includes Python and torch, and never decreases) and the peak "
                                       "allocated CUDA memory on a GPU."),))
    return Section(f"{prefix}configuration", "Configuration", tuple(blocks), (env,))


def _run_data(run: RunData, curves, matrices_k) -> dict[str, Any]:
    """The numbers behind a run's tables and figures, JSON-ready (display units)."""
    K = run.adapt_steps
    strategies = []
    for index, s in enumerate(run.strategies):
        summary = {}
        for column in SUMMARY_COLUMNS:
            keys = ("k0",) if column.cost or column in ADAPTATION_COLUMNS + STEPS_COLUMNS else ("k0", f"k{K}")
            summary[column.key] = {k: dict(zip(("mean", "ci95"), column_values(run, column, k)[index])) for k in keys}
        strategies.append({
            "label": s.label, "seeds": list(s.seeds), "summary": summary,
            "matrix": {f"k{k}": matrices_k[k][index] for k in matrices_k},
            "adaptation": ({key: {"mean": mean, "ci95": ci} for key, (mean, ci) in curves[index][1].items()}
                           if curves else None),
        })
    return to_json({
        "directory": run.directory, "experiment": run.name, "scenario": run.scenario,
        "kind": "regression" if run.regression else "classification",
        "unit": "mse (lower is better)" if run.regression else "accuracy (higher is better)",
        "complete": run.complete, "num_tasks": run.num_tasks, "adapt_steps": K,
        "config": run.config, "environment": run.document.get("environment", {}), "strategies": strategies,
    })


def pairwise_data(pairs: Sequence[tuple[Entry, Entry]]) -> list[dict[str, Any]]:
    """The numbers of :func:`pairwise_tables`, JSON-ready: per pair, k and metric, the paired
    difference ``{"mean", "ci95", "seeds"}`` or ``{"skipped": reason}``."""
    out = []
    for a, b in pairs:
        K = a.adapt_steps
        by_k = {}
        for k in sorted({0, K}):
            chosen = compare.PAIRWISE_METRICS_K + (compare.PAIRWISE_METRICS_ANY_K if k == 0 else ())
            cells = {}
            for metric in chosen:
                reason = a.reason(metric, k) or b.reason(metric, k)
                mean, ci, n = compare.paired_difference(a.per_seed(metric, k), b.per_seed(metric, k))
                cells[metric.key] = {"skipped": reason} if reason else {"mean": mean, "ci95": ci, "seeds": n}
            by_k[f"k{k}"] = cells
        out.append({"a": a.name, "b": b.name, **by_k})
    return to_json(out)


def _pairwise_section(prefix: str, pairs: Sequence[tuple[Entry, Entry]], filtered: bool) -> Section:
    blocks: list[Block] = list(pairwise_tables(pairs))
    if not pairs:
        blocks.append(paragraph("No pair named by --compare is in this run."))
    elif not filtered:
        blocks.insert(0, paragraph("Every pair of strategies, A listed before B; choose pairs with ",
                                   Span("lifelong report RUN_DIR --compare A,B", "code"), "."))
    return Section(f"{prefix}pairwise", "A versus B: paired differences over seeds", tuple(blocks))


def run_sections(run: RunData, prefix: str = "", draw: bool = True,
                 colours: dict[str, str] | None = None, entries: Sequence[Entry] | None = None,
                 pairs: Sequence[tuple[str, str]] | None = None) -> tuple[list[Section], dict[str, Any]]:
    """The sections of one run (ids prefixed by ``prefix``) and the data behind them; figures
    only when ``draw``, strategies coloured by ``colours`` (default: a palette of this run's).

    ``entries`` are the run's strategies as compared (default :func:`compare.run_entries`);
    ``pairs`` (names) restricts the pairwise table to those pairs (default: every pair)."""
    colours = colours or figures.palette(_strategy_label(run))
    if not run.strategies:
        note = paragraph("No (strategy, seed) run has finished.", warning=True)
        return [Section(f"{prefix}summary", "Summary", (note,))], _run_data(run, [], {})
    if run.online:
        return _online_sections(run, prefix, draw, colours)
    curves = _curves(run) if run.square else []
    entries = list(entries) if entries is not None else compare.run_entries(run)
    summary_blocks: list[Block] = answers(entries)
    summary_blocks += summary_tables(run, entries)
    chosen = compare.select_pairs(entries, pairs)
    sections = [
        Section(f"{prefix}summary", "Summary", tuple(summary_blocks)),
        *([_pairwise_section(prefix, chosen, bool(pairs))] if len(entries) > 1 else []),
        _heatmap_section(run, prefix, draw),
        _stream_section(run, prefix, draw),
        _adaptation_section(run, prefix, curves, draw, colours),
        _transfer_section(run, prefix, draw, colours),
        *_training_sections(run, prefix, draw, colours),
        _config_section(run, prefix),
    ]
    K = run.adapt_steps
    matrices = {k: [_mean_matrix(s, k, run.regression) for s in run.strategies] for k in sorted({0, K})}
    data = _run_data(run, curves, matrices)
    data["skipped"] = {e.name: {f"k{k}": reasons for k, reasons in e.skipped.items() if reasons} for e in entries}
    data["pairwise"] = pairwise_data(chosen)
    return sections, data


# Online runs -----------------------------------------------------------------------------

ONLINE_COLUMNS = (
    metric_column("online_accuracy", SHOWN_METRICS),
    metric_column("recovery_auc", SHOWN_METRICS),
    metric_column("forgetting", SHOWN_METRICS),
    Column("forgetting_kK", "Anytime forgetting, k = K", "Anytime forgetting, k = K", "lower"),
    metric_column("ood_drop", SHOWN_METRICS),
    Column("total_seconds", "Run s", "Run s", "lower", cost=True),
    COST_COLUMNS[2],
)
ONLINE_COMPARISON_COLUMNS = tuple(c for c in ONLINE_COLUMNS if c.key in (
    "online_accuracy", "recovery_auc", "forgetting", "ood_drop", "total_seconds"))
ONLINE_HIGHLIGHTS = (
    ("online_accuracy", "Highest online accuracy", "Lowest online MSE"),
    ("recovery_auc", "Adapts fastest after a switch (recovery AUC)",
     "Adapts fastest after a switch (recovery AUC, MSE)"),
    ("forgetting", "Forgets least (anytime forgetting)", "Forgets least (anytime forgetting, MSE)"),
    ("ood_drop", "Suffers least out of distribution (drop from {reference} to the other pools)",
     "Suffers least out of distribution (MSE increase from {reference} to the other pools)"),
)
MAX_POINTS = 2000  # points per line of the online accuracy figure: a smoothed curve needs no more


def _online_columns(run: RunData) -> list[Column]:
    """The summary columns that apply: no k = K column without adaptation steps, no
    out-of-distribution drop for a stream of one pool."""
    pools = run.strategies[0].online.pool_names
    return [c for c in ONLINE_COLUMNS
            if not (c.key == "forgetting_kK" and run.adapt_steps == 0) and not (c.key == "ood_drop" and len(pools) < 2)]


def online_column_values(run: RunData, stats: dict[str, dict[str, np.ndarray]],
                         column: Column) -> list[tuple[float, float]]:
    """``(mean, ci95)`` over seeds per strategy of an online run in display units, from the
    per-seed metrics ``stats`` (:func:`~simulator.report.data.online_stats`, by label)."""
    out = []
    for s in run.strategies:
        per_seed = per_seed_cost(s)[column.key] if column.cost else stats[s.label][column.key]
        mean, ci = (float(v) for v in mean_ci(per_seed))
        out.append((float(to_display(mean, run.regression)) if column.better == "level" else mean, ci))
    return out


def online_highlights(run: RunData, stats) -> Bullets | None:
    """The one-line answers of an online run: who predicts best, adapts fastest after a switch,
    forgets least, and suffers least out of distribution, each with the runner-up."""
    labels = _strategy_label(run)
    if len(labels) < 2:
        return None
    columns = {c.key: c for c in _online_columns(run)}
    reference = reference_pool(run.strategies[0].online.pool_names)
    items = [_highlight((title_regression if run.regression else title).format(reference=reference), labels,
                        online_column_values(run, stats, columns[key]), columns[key], run.regression)
             for key, title, title_regression in ONLINE_HIGHLIGHTS if key in columns]
    items = [item for item in items if item]
    return Bullets(tuple(items)) if items else None


def online_summary_table(run: RunData, stats) -> Table:
    """One row per strategy: online accuracy, recovery AUC, anytime forgetting, the
    out-of-distribution drop and costs."""
    columns = _online_columns(run)
    online = run.strategies[0].online
    K, unit = run.adapt_steps, "MSE" if run.regression else "accuracy"
    reference = reference_pool(online.pool_names)
    if not any(c.key == "ood_drop" for c in columns):
        drop = ""
    elif run.regression:
        drop = (f" Out-of-distribution drop: the mean online MSE over the other pools minus the one on {reference} "
                "(an MSE increase; lower is better).")
    else:
        drop = (f" Out-of-distribution drop: the online accuracy on {reference} minus the mean over the other pools "
                "(lower is better).")
    return _table(
        _strategy_label(run), columns, [online_column_values(run, stats, c) for c in columns], run.regression,
        title="Online summary",
        caption=f"Cells: {_ci_note(run)}. Bold: best in its column (↑ higher is better, ↓ lower is better). "
                f"Online {unit}: the mean over every batch of the {unit} of the prediction made before the "
                f"batch's labels were seen. Recovery AUC: the mean of the recovery curve over its first "
                f"{online.recovery_batches} batches after a switch. Anytime forgetting: the mean over the evaluation "
                "columns of the drop from the best earlier held-out score to the last one"
                + (" (for the MSE, the rise from the lowest earlier MSE)" if run.regression else "")
                + (f", as is (k = 0) and after {K} adaptation steps" if K else "") + "."
                + drop + " Run s: the learn and evaluation seconds of one whole run. Peak memory: as in the "
                "Environment section.")


def per_pool_table(run: RunData, stats) -> Table:
    """Online cumulative accuracy (the MSE for regression) per pool and over all batches."""
    pools = run.strategies[0].online.pool_names
    columns = [Column(f"pool{p}", name, name, "level") for p, name in enumerate(pools)]
    values = [[(float(to_display(m, run.regression)), float(c))
               for m, c in (mean_ci(stats[s.label]["by_pool"][:, p]) for s in run.strategies)]
              for p in range(len(pools))]
    total = Column("online_accuracy", "all batches", "all batches", "level")
    unit = "MSE" if run.regression else "accuracy"
    return _table(_strategy_label(run), columns + [total], values + [online_column_values(run, stats, total)],
                  run.regression, title=f"Online cumulative {unit} per pool",
                  caption=f"Per pool, the mean over that pool's batches of the {unit} of the prediction made before "
                          f"the batch's labels were seen (OSAKA's online cumulative accuracy); every batch weighs "
                          f"the same. Cells: {_ci_note(run)}; bold: best in its column. n/a: a pool that a seed's "
                          "stream never visited.")


def _online_opening(run: RunData) -> Block:
    online = run.strategies[0].online
    K, J = run.adapt_steps, len(online.column_names)
    scenario = run.config.get("scenario", {})
    protocol = f"{scenario['protocol']} " if scenario.get("protocol") else ""
    switches = np.mean([s.online.switches.sum(axis=1).mean() for s in run.strategies])
    return paragraph(
        "Scenario ", Span(run.scenario, "code"),
        f" (online, {protocol}{'regression' if run.regression else 'classification'}), "
        f"{online.scores.shape[1]} batches per seed with {switches:.1f} task switches on average, pools "
        f"{', '.join(online.pool_names)}; {J} evaluation column{'' if J == 1 else 's'} "
        f"({', '.join(online.column_names)}) evaluated {len(online.eval_batches)} times after k = 0..{K} adaptation "
        f"steps; seeds {', '.join(str(s) for s in run.config.get('seeds', []))}, "
        f"device {run.document.get('environment', {}).get('device', 'unknown')}. Run directory ",
        Span(run.directory, "code"), ".")


def _online_scores_note(run: RunData) -> Block:
    unit = "the MSE (lower is better)" if run.regression else "accuracy (higher is better)"
    return paragraph(
        f"Online scores are {unit} of each batch's prediction, made before the learner saw that batch's labels "
        "(it updates on them afterwards); the recovery curve averages them by the number of batches since the last "
        "task switch. A[h, j, k] is the score on evaluation column j's fixed held-out episodes at the h-th "
        "evaluation after k adaptation steps. The task-boundary metrics (R[i, j, k], BWT, FWT, learning accuracy) "
        "are not shown: an online stream has no task boundaries to take their rows at.")


def _online_accuracy_section(run: RunData, prefix: str, draw: bool, colours: dict[str, str]) -> Section:
    length = run.strategies[0].online.scores.shape[1]
    window, stride = smoothing_window(length), max(1, math.ceil(length / MAX_POINTS))
    curves = []
    for s in run.strategies:
        mean, ci = mean_ci(moving_average(s.online.scores, window)[:, ::stride])
        curves.append((s.label, to_display(mean, run.regression), ci))
    streams: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
    for s in run.strategies:  # a seed's stream is the same for every strategy: take its first
        for seed, pools, switches in zip(s.seeds, s.online.pools, s.online.switches):
            streams.setdefault(seed, (seed, pools, np.flatnonzero(switches[1:]) + 1))
    streams_in_order = [streams[seed] for seed in sorted(streams)]
    unit = "MSE" if run.regression else "accuracy"
    several = max(len(s.seeds) for s in run.strategies) > 1
    figure = _figure(
        draw, f"{prefix}online-accuracy",
        lambda: figures.online_accuracy(np.arange(length)[::stride], curves, streams_in_order,
                                        run.strategies[0].online.pool_names, window, run.regression, colours),
        f"Online {unit} over the stream per strategy, with each seed's pools and task switches",
        f"The online {unit} of each batch's prediction (made before its labels were seen), as a trailing moving "
        f"average over {window} batch{'' if window == 1 else 'es'}, mean over seeds"
        + ("; band: 95% confidence interval over seeds. " if several else " (one seed, so no band). ")
        + "Below: each seed's stream (every strategy of a seed sees the same one), coloured by the pool of each "
          "stretch, with a tick at each task switch.")
    return Section(f"{prefix}online-accuracy", f"Online {unit} over the stream", (figure,))


def _recovery_section(run: RunData, prefix: str, stats, draw: bool, colours: dict[str, str]) -> Section:
    curves = []
    for s in run.strategies:
        mean, ci = mean_ci(stats[s.label]["recovery_curve"])
        curves.append((s.label, to_display(mean, run.regression), ci))
    n = run.strategies[0].online.recovery_batches
    several = max(len(s.seeds) for s in run.strategies) > 1
    figure = _figure(
        draw, f"{prefix}recovery", lambda: figures.recovery_curves(curves, run.regression, colours),
        "Recovery curves: online score against batches since the last task switch",
        f"The online {'MSE' if run.regression else 'accuracy'} against the number of batches since the last task "
        "switch (0: the switch batch itself, predicted before any of the new task's labels), averaged over every "
        "task of the stream, then over seeds"
        + ("; band: 95% confidence interval over seeds. " if several else " (one seed, so no band). ")
        + f"Its mean over these {n} points is the recovery AUC of the summary: the faster a strategy recovers "
          "after a switch, the higher (for the MSE, the lower) it lies. A point is missing where no task lasted "
          "that long.")
    return Section(f"{prefix}recovery", "Recovery after a task switch", (figure,))


def _anytime_section(run: RunData, prefix: str, draw: bool) -> Section:
    online, K = run.strategies[0].online, run.adapt_steps
    panels = [(s.label, to_display(mean_ci(s.score)[0], run.regression)) for s in run.strategies]
    figure = _figure(
        draw, f"{prefix}anytime",
        lambda: figures.anytime_lines(panels, online.eval_batches, online.column_names, K, run.regression),
        "The anytime tensor: held-out score of each evaluation column along the stream, one panel per strategy",
        "A[h, j, k]: the score on each evaluation column's fixed held-out episodes at each evaluation (x: batches "
        "seen), mean over seeds; solid as is (k = 0)"
        + (f", dashed after {K} adaptation steps on each episode's support set" if K else "")
        + ". Anytime forgetting is the drop from each line's best earlier point to its last one.")
    return Section(f"{prefix}anytime", "Held-out score along the stream (anytime tensor)", (figure,))


def _online_run_data(run: RunData, stats, columns: Sequence[Column]) -> dict[str, Any]:
    """The numbers behind an online run's tables and figures, JSON-ready (display units); the
    per-batch series stay in tensors.npz."""
    online, K = run.strategies[0].online, run.adapt_steps
    strategies = []
    for index, s in enumerate(run.strategies):
        by_pool = {name: dict(zip(("mean", "ci95"), (float(to_display(m, run.regression)), float(c))))
                   for name, m, c in zip(online.pool_names, *mean_ci(stats[s.label]["by_pool"]))}
        curve_mean, curve_ci = mean_ci(stats[s.label]["recovery_curve"])
        anytime = to_display(mean_ci(s.score)[0], run.regression)
        strategies.append({
            "label": s.label, "seeds": list(s.seeds),
            "summary": {c.key: dict(zip(("mean", "ci95"), online_column_values(run, stats, c)[index]))
                        for c in columns},
            "by_pool": by_pool,
            "recovery_curve": {"mean": to_display(curve_mean, run.regression), "ci95": curve_ci},
            "anytime": {f"k{k}": anytime[:, :, k] for k in sorted({0, K})},
        })
    return to_json({
        "directory": run.directory, "experiment": run.name, "scenario": run.scenario, "loop": "online",
        "kind": "regression" if run.regression else "classification",
        "unit": "mse (lower is better)" if run.regression else "accuracy (higher is better)",
        "complete": run.complete, "adapt_steps": K, "batches": online.scores.shape[1],
        "pools": online.pool_names, "columns": online.column_names, "eval_batches": online.eval_batches,
        "recovery_batches": online.recovery_batches, "reference_pool": reference_pool(online.pool_names),
        "config": run.config, "environment": run.document.get("environment", {}), "strategies": strategies,
    })


def _online_sections(run: RunData, prefix: str, draw: bool,
                     colours: dict[str, str]) -> tuple[list[Section], dict[str, Any]]:
    """The sections of an online run and the data behind them (see :func:`run_sections`)."""
    stats = {s.label: online_stats(s) for s in run.strategies}
    bullets = online_highlights(run, stats)
    summary = ([bullets] if bullets else []) + [online_summary_table(run, stats), per_pool_table(run, stats)]
    sections = [
        Section(f"{prefix}summary", "Summary", tuple(summary)),
        _online_accuracy_section(run, prefix, draw, colours),
        _recovery_section(run, prefix, stats, draw, colours),
        _anytime_section(run, prefix, draw),
        *_training_sections(run, prefix, draw, colours),
        _config_section(run, prefix),
    ]
    return sections, _online_run_data(run, stats, _online_columns(run))


def run_titles(runs: Sequence[RunData]) -> list[str]:
    """``experiment (scenario)`` per run, with the directory added where two would read the same."""
    titles = [f"{r.name} ({r.scenario})" for r in runs]
    return [f"{t} [{r.directory}]" if titles.count(t) > 1 else t for t, r in zip(titles, runs)]


def _long_table(runs: Sequence[RunData], titles: Sequence[str], columns: Sequence[Column],
                values: Sequence[list[list[tuple[float, float]]]], title: str, caption: str) -> Table:
    """One row per (run, strategy); ``values[r][c]`` is run r's column c per strategy; best
    marked within each run."""
    header = ["Run", "Strategy"] + [c.header(False) if c.better != "level" else f"{c.title} ↑ / MSE ↓"
                                    for c in columns]
    rows = []
    for run, run_title, run_values in zip(runs, titles, values):
        flags = [best_flags(v, c, run.regression) for v, c in zip(run_values, columns)]
        for r, s in enumerate(run.strategies):
            rows.append((Cell(run_title), Cell(s.label), *(
                Cell(format_stat(*run_values[c][r], column.key), best=flags[c][r], numeric=True)
                for c, column in enumerate(columns))))
    return Table(tuple(header), tuple(rows), title=title, caption=caption)


def _task_comparison(runs: Sequence[RunData], titles: Sequence[str], draw: bool,
                     colours: dict[str, str]) -> list[Block]:
    """The final score as a strategies x runs table, the key metrics per (run, strategy), and
    one figure of bars per run and metric, for runs of the task loop."""
    labels = list(dict.fromkeys(s.label for r in runs for s in r.strategies))

    def by_label(run: RunData, column: Column) -> list[tuple[float, float]]:
        values = dict(zip(_strategy_label(run), column_values(run, column)))
        return [values.get(label, (math.nan, math.nan)) for label in labels]

    final = COMPARISON_COLUMNS[0]
    blocks: list[Block] = [
        _table(labels, [final] * len(runs), [by_label(r, final) for r in runs], [r.regression for r in runs],
               headers=[f"{t}: {final.header(r.regression)}" for t, r in zip(titles, runs)],
               title="Final score: strategies x scenarios",
               caption="As learned (k = 0), mean ± 95% interval over seeds; bold: the best strategy of each run. "
                       "Classification runs show accuracy and regression runs the MSE, so read each column "
                       "in its own unit."),
        _long_table(runs, titles, COMPARISON_COLUMNS,
                    [[column_values(run, c) for c in COMPARISON_COLUMNS] for run in runs],
                    title="Key metrics per run and strategy",
                    caption="As learned (k = 0), mean ± 95% interval over seeds; bold: best within its run. "
                            "Score columns are accuracy (higher is better) for classification runs and the MSE "
                            "(lower is better) for regression runs."),
    ]
    panels = []
    for run, title in zip(runs, titles):
        values = {}
        for column in COMPARISON_FIGURE_ROWS:
            v = by_label(run, column)
            values[column.key] = (np.array([m for m, _ in v]), np.array([c for _, c in v]))
        panels.append((title, run.regression, values))
    rows = [(c.key, c.header(False), c.header(True)) for c in COMPARISON_FIGURE_ROWS]
    blocks.append(_figure(draw, "comparison", lambda: figures.comparison_bars(labels, panels, rows, colours),
                          "Strategies x runs: final score, forgetting and forward transfer",
                          "One column per run, one row per metric; bars: mean over seeds, lines: 95% "
                          "confidence interval."))
    return blocks


def _online_comparison(runs: Sequence[RunData], titles: Sequence[str]) -> Table:
    """The key online metrics per (run, strategy) of runs of the online loop."""
    values = []
    for run in runs:
        stats = {s.label: online_stats(s) for s in run.strategies}
        values.append([online_column_values(run, stats, c) for c in ONLINE_COMPARISON_COLUMNS])
    return _long_table(runs, titles, ONLINE_COMPARISON_COLUMNS, values, title="Online runs: key metrics per strategy",
                       caption="Mean ± 95% interval over seeds; bold: best within its run. Online and recovery "
                               "scores are accuracy (higher is better) for classification runs and the MSE (lower "
                               "is better) for regression runs; forgetting (k = 0) and the out-of-distribution drop "
                               "are lower-is-better differences (n/a for a stream of one pool).")


def comparison_section(runs: Sequence[RunData], titles: Sequence[str], draw: bool,
                       colours: dict[str, str], across: Sequence[Section] = ()) -> Section:
    """Strategies x scenarios: the final score as a strategies x runs table, the key metrics per
    (run, strategy), best marked within each run, and one figure of bars per run and metric.
    Runs of the online loop, which have no task-boundary metrics, get a table of their online
    metrics instead. ``across``: the sections comparing strategies of different runs."""
    task = [(r, t) for r, t in zip(runs, titles) if not r.online]
    online = [(r, t) for r, t in zip(runs, titles) if r.online]
    blocks = _task_comparison(*zip(*task), draw, colours) if task else []
    if online:
        blocks.append(_online_comparison(*zip(*online)))
    return Section("comparison", "Comparison: strategies x scenarios", tuple(blocks), tuple(across))


def across_runs(runs: Sequence[RunData], titles: Sequence[str], entries: Sequence[Sequence[Entry]],
                pairs: Sequence[tuple[str, str]] | None) -> tuple[list[Section], list[dict[str, Any]]]:
    """For each group of two or more runs with the same scenario and evaluation settings (whose
    seeds therefore pair): the one-line answers over all their strategies and the paired
    differences of strategies of different runs (or the pairs named by ``pairs``)."""
    sections, data = [], []
    for number, group in enumerate((g for g in compare.comparable_groups(runs) if len(g) > 1), start=1):
        members = [e for i in group for e in entries[i]]
        if pairs:
            chosen = compare.select_pairs(members, pairs)
        else:
            chosen = [(a, b) for x, i in enumerate(group) for j in group[x + 1:] for a in entries[i]
                      for b in entries[j]]
        intro = paragraph(
            "Runs " + ", ".join(f"{i + 1} ({titles[i]})" for i in group) + " have the same scenario and evaluation "
            "settings, so the same seed gives the same stream and held-out episodes in each: their strategies are "
            "compared here seed by seed. A label found in several of these runs is shown as "
            "label [run directory].")
        blocks: list[Block] = [intro, *answers(members), *pairwise_tables(chosen)]
        if not chosen:
            blocks.append(paragraph("No pair named by --compare is in these runs."))
        title = f"A versus B across runs: {runs[group[0]].scenario}"
        sections.append(Section(f"comparison-across{number}", title, tuple(blocks)))
        data.append({"runs": [runs[i].directory for i in group], "pairwise": pairwise_data(chosen)})
    return sections, data


def build(runs: Sequence[RunData], draw: bool = True, pairs: Sequence[tuple[str, str]] | None = None) -> Report:
    """The report of one run directory, or the comparison of several followed by each run.

    With ``draw`` false no figure is drawn (nor matplotlib imported): a note takes each one's
    place. ``pairs`` (``[(A, B), ...]``, names as the report shows them) restricts every
    pairwise table to those pairs; a name that no run holds, or a pair of runs whose seeds do
    not pair, raises :class:`~simulator.report.data.ReportError`.
    """
    names = compare.entry_names(runs)
    entries = [compare.run_entries(run, n) for run, n in zip(runs, names)]
    if pairs:
        compare.check_pairs([[e for i in g for e in entries[i]] for g in compare.comparable_groups(runs)], pairs)
    if len(runs) == 1:
        run = runs[0]
        sections, data = run_sections(run, draw=draw, entries=entries[0], pairs=pairs)
        return Report(f"Lifelong-learning report: {run.name}", tuple(_run_intro(run)), tuple(sections),
                      {"format": "lifelong-report/1", "runs": [data]})
    titles = run_titles(runs)
    colours = figures.palette([label for run in runs for label in _strategy_label(run)])
    children, data = [], []
    for index, (run, title) in enumerate(zip(runs, titles), start=1):
        sections, run_data = run_sections(run, prefix=f"run{index}-", draw=draw, colours=colours,
                                          entries=entries[index - 1], pairs=pairs)
        children.append(Section(f"run{index}", f"Run {index}: {title}", tuple(_run_intro(run)), tuple(sections)))
        data.append(run_data)
    across, across_data = across_runs(runs, titles, entries, pairs)
    intro = (paragraph(f"Comparison of {len(runs)} run directories: "
                       + "; ".join(f"{i}. {t}" for i, t in enumerate(titles, start=1)) + "."),)
    return Report("Lifelong-learning comparison: " + ", ".join(r.name for r in runs), intro,
                  (comparison_section(runs, titles, draw, colours, across), *children),
                  {"format": "lifelong-report/1", "runs": data, "across": across_data})


# Training curves (the run directory's logs, simulator.loggers) ----------------------------

MAX_CURVE_PANELS = 6  # each panel costs about 0.1 s to draw, and the figure is drawn with every report
_TAG_ORDER = ("train/", "online/", "eval/", "task/")


def _training_sections(run: RunData, prefix: str, draw: bool, colours: dict[str, str]) -> list[Section]:
    """The training-curve section when the run directory holds CSV logs (none otherwise): one
    panel per logged tag that changes along the run (at most :data:`MAX_CURVE_PANELS`, in the
    order train, online, eval, task), one line per strategy, the mean over its seeds."""
    from simulator.loggers import mean_curve

    if not run.logs:
        return []
    panels = []
    tags = sorted({tag for curves in run.logs.values() for tag in curves},
                  key=lambda t: (next((i for i, p in enumerate(_TAG_ORDER) if t.startswith(p)), len(_TAG_ORDER)), t))
    for tag in tags:
        lines = []
        for s in run.strategies:
            per_seed = [run.logs[(s.label, seed)][tag] for seed in s.seeds if tag in run.logs.get((s.label, seed), {})]
            if per_seed:
                lines.append((s.label, *mean_curve(per_seed)))
        values = np.concatenate([v for _, _, v in lines])
        if max(len(x) for _, x, _ in lines) > 1 and np.unique(values[np.isfinite(values)]).size > 1:
            panels.append((tag, lines))
    if not panels:
        return []
    shown = panels[:MAX_CURVE_PANELS]
    left_out = f" {len(panels) - len(shown)} more tags are in the logs." if len(panels) > len(shown) else ""
    figure = _figure(draw, f"{prefix}training", lambda: figures.training_curves(shown, colours),
                     "Training curves: the logged values along each run",
                     "What the runs logged along the way (logs/*.csv), one panel per tag, mean over seeds, against "
                     "the run's iteration count: train/ inside a task (every [logging] every iterations), online/ "
                     "per batch window, eval/ the mean over the tasks seen after each evaluated row, task/ what "
                     "learn returned per task." + left_out, panels=len(shown))
    return [Section(f"{prefix}training", "Training curves", (figure,))]
