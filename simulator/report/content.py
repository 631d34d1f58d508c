"""What a report says: sections, tables, highlights and figures built from loaded run directories.

:func:`build` turns one run directory into a single-run report and several into a comparison
(strategies x scenarios) followed by each run in full. Everything here is a function of
:class:`~simulator.report.data.RunData`; figures come from :mod:`simulator.report.figures`.

Numbers are shown in the reader's unit: accuracy for classification, the MSE for regression
(score = -MSE inside). Differences keep the "higher is better" sign of the score (BWT and FWT:
positive is good; for regression that is an MSE reduction), and forgetting stays "lower is
better" (for regression, an MSE increase).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from simulator.report import figures
from simulator.files import to_json
from simulator.report.data import (RunData, StrategyRuns, adaptation_curves, mean_ci, per_seed_cost, stat,
                                   to_display)
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


MATRIX_COLUMNS = (
    Column("final_accuracy", "Final acc.", "Final MSE", "level"),
    Column("average_incremental_accuracy", "Avg. incremental acc.", "Avg. incremental MSE", "level"),
    Column("learning_accuracy", "Learning acc.", "Learning MSE", "level"),
    Column("backward_transfer", "BWT", "BWT", "higher"),
    Column("forward_transfer", "FWT", "FWT", "higher"),
    Column("forgetting", "Forgetting", "Forgetting", "lower"),
)
ADAPTATION_COLUMNS = (
    Column("new_task_adaptation", "New-task adapt.", "New-task adapt. MSE", "level"),
    Column("recovery_adaptation", "Recovery adapt.", "Recovery adapt. MSE", "level"),
)
COST_COLUMNS = (
    Column("learn_seconds", "Learn s / task", "Learn s / task", "lower", cost=True),
    Column("eval_seconds", "Eval s / row", "Eval s / row", "lower", cost=True),
    Column("peak_memory_mb", "Peak memory MB", "Peak memory MB", "lower", cost=True),
)
SUMMARY_COLUMNS = MATRIX_COLUMNS + ADAPTATION_COLUMNS + COST_COLUMNS
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
           caption: str = "", title: str = "") -> Table:
    """Rows = labels; ``values[c][r]`` is column c's (mean, ci) for row r."""
    per_column = regression if isinstance(regression, (list, tuple)) else [regression] * len(columns)
    flags = [best_flags(v, col, reg) for v, col, reg in zip(values, columns, per_column)]
    rows = []
    for r, label in enumerate(labels):
        cells = [Cell(label)]
        for c, column in enumerate(columns):
            mean, ci = values[c][r]
            cells.append(Cell(format_stat(mean, ci, column.key), best=flags[c][r], numeric=True))
        rows.append(tuple(cells))
    header = headers or [col.header(reg) for col, reg in zip(columns, per_column)]
    return Table((first, *header), tuple(rows), caption, title)


def summary_tables(run: RunData) -> list[Table]:
    """The summary table as learned (k = 0, with adaptation and costs) and after K steps."""
    labels = [s.label for s in run.strategies]
    K = run.adapt_steps
    reg = run.regression
    several_seeds = max(len(s.seeds) for s in run.strategies) > 1
    ci_note = ("mean ± 95% confidence half-width over seeds (Student's t)" if several_seeds
               else "one seed per strategy, so no confidence interval")
    first = _table(labels, SUMMARY_COLUMNS, [column_values(run, c) for c in SUMMARY_COLUMNS], reg,
                   title="As learned (k = 0)",
                   caption=f"Cells: {ci_note}. Bold: best in its column (↑ higher is better, ↓ lower is better). "
                           f"The adaptation columns are the mean score over k = 0..{K} adaptation steps (the "
                           "area under the adaptation curve) on new tasks before learning them and on old tasks "
                           "at the end. Time and memory are per seed, then averaged; on CPU, peak memory is the "
                           "process's resident high-water mark, which never decreases, so a strategy run later in "
                           "the same process inherits the peaks of those before it.")
    if K == 0:
        return [first]
    second = _table(labels, MATRIX_COLUMNS, [column_values(run, c, f"k{K}") for c in MATRIX_COLUMNS], reg,
                    title=f"After {K} adaptation steps (k = {K})",
                    caption=f"The same metrics on R = score[:, :, {K}]: each episode's model adapted {K} steps on "
                            "its support set before scoring the query set.")
    return [first, second]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    if not all(math.isfinite(x) for x in (*a, *b)):
        return None
    return abs(a[0] - b[0]) <= a[1] + b[1]


HIGHLIGHTS = (
    (MATRIX_COLUMNS[0], "Highest final accuracy", "Lowest final MSE"),
    (MATRIX_COLUMNS[5], "Least forgetting", "Least forgetting"),
    (MATRIX_COLUMNS[4], "Most forward transfer", "Most forward transfer"),
    (ADAPTATION_COLUMNS[0], "Best few-shot adaptation to new tasks", "Best few-shot adaptation to new tasks"),
    (ADAPTATION_COLUMNS[1], "Best recovery of old tasks", "Best recovery of old tasks"),
    (COST_COLUMNS[0], "Cheapest to train (seconds per task)", "Cheapest to train (seconds per task)"),
)


def highlights(run: RunData) -> Bullets | None:
    """One line per question a reader asks first (who forgets least, transfers most, adapts
    fastest, costs least), with the runner-up and whether the 95% intervals separate them."""
    labels = [s.label for s in run.strategies]
    if len(labels) < 2:
        return None
    items = []
    for column, title, title_regression in HIGHLIGHTS:
        values = column_values(run, column)
        order = sorted((i for i, (m, _) in enumerate(values) if math.isfinite(m)),
                       key=lambda i: values[i][0], reverse=not column.lower_is_better(run.regression))
        if len(order) < 2:
            continue
        best, second = order[0], order[1]
        if format_stat(*values[best], column.key) == format_stat(*values[second], column.key):
            verdict = "a tie"
        else:
            verdict = {None: "one seed, so no interval to judge by",
                       True: "within the 95% intervals: not a clear difference",
                       False: "the 95% intervals do not overlap"}[_overlap(values[best], values[second])]
        items.append((Span(f"{title_regression if run.regression else title}: ", "strong"),
                      Span(labels[best], "code"), Span(f" {format_stat(*values[best], column.key)}; next "),
                      Span(labels[second], "code"), Span(f" {format_stat(*values[second], column.key)} ({verdict}).")))
    return Bullets(tuple(items)) if items else None


def _mean_matrix(s: StrategyRuns, k: int, regression: bool) -> np.ndarray:
    return to_display(mean_ci(s.score[..., k])[0], regression)


def _run_intro(run: RunData) -> list[Block]:
    config, K, T = run.config, run.adapt_steps, run.num_tasks
    scenario = config.get("scenario", {})
    seeds = config.get("seeds", [])
    protocol = f"{scenario['protocol']} " if scenario.get("protocol") else ""
    blocks: list[Block] = [paragraph(
        "Scenario ", Span(run.scenario, "code"),
        f" ({protocol}{'regression' if run.regression else 'classification'}), {T} task{'' if T == 1 else 's'}, "
        "scores after "
        f"k = 0..{K} adaptation steps, seeds {', '.join(str(s) for s in seeds)}, "
        f"device {run.document.get('environment', {}).get('device', 'unknown')}. Run directory ",
        Span(run.directory, "code"), ".")]
    failures = run.document.get("failures") or []
    if failures:
        blocks.append(paragraph(
            f"{len(failures)} run(s) failed and are left out of every number below: "
            + "; ".join(f"{f.get('strategy')} seed {f.get('seed')}: {f.get('error')}" for f in failures) + ".",
            warning=True))
    diverged = [f"{s.label}: {int((~np.isfinite(s.score)).sum())} of {s.score.size} cells of R[i, j, k]"
                for s in run.strategies if not np.isfinite(s.score).all()]
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
    scored_on = ("each task's whole test pool (k > 0: after adapting on support sets from its training pool)"
                 if config.get("evaluation", {}).get("full_test") else "each episode's query set")
    blocks.append(paragraph(
        "Scores are " + (f"the MSE on {scored_on} (lower is better); "
                         if run.regression else f"accuracy on {scored_on} (higher is better); ")
        + "R[i, j, k] is the score on task j after learning tasks 0..i-1 (row 0: untrained) and k "
        "adaptation steps. BWT and FWT divide by T-1 (the GEM paper; its code divides by T); "
        "forgetting is max-based (Chaudhry et al. 2018)"
        + ("; for regression BWT and FWT are MSE reductions (positive is good) and forgetting an "
           "MSE increase." if run.regression else ".")))
    return blocks


def _strategy_label(run: RunData) -> list[str]:
    return [s.label for s in run.strategies]


def _figure(draw: bool, name: str, render: Callable[[], bytes], alt: str, caption: str) -> Block:
    """The figure, or with ``draw`` false a note in its place (the quick report rewritten after
    each finished run of an experiment stays cheap by drawing nothing)."""
    if not draw:
        return paragraph(f"Not drawn yet: {alt[0].lower()}{alt[1:]}. Figures are drawn when the run completes, "
                         "or at any time with ", Span("lifelong report RUN_DIR", "code"), ".")
    return Figure(name, render(), alt, caption)


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
            "after it was learned; below the outline is memory of old tasks, above it transfer to future ones."))
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
                     "before the task is learned, solid after, a dot where it was learned.")
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
                        else "One seed, so no confidence band."))
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
                     "95% confidence interval over seeds.")
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
            keys = ("k0",) if column.cost or column in ADAPTATION_COLUMNS else ("k0", f"k{K}")
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


def run_sections(run: RunData, prefix: str = "", draw: bool = True,
                 colours: dict[str, str] | None = None) -> tuple[list[Section], dict[str, Any]]:
    """The sections of one run (ids prefixed by ``prefix``) and the data behind them; figures
    only when ``draw``, strategies coloured by ``colours`` (default: a palette of this run's)."""
    colours = colours or figures.palette(_strategy_label(run))
    if not run.strategies:
        note = paragraph("No (strategy, seed) run has finished.", warning=True)
        return [Section(f"{prefix}summary", "Summary", (note,))], _run_data(run, [], {})
    curves = _curves(run) if run.square else []
    summary_blocks: list[Block] = []
    bullets = highlights(run)
    if bullets is not None:
        summary_blocks.append(bullets)
    summary_blocks += summary_tables(run)
    sections = [
        Section(f"{prefix}summary", "Summary", tuple(summary_blocks)),
        _heatmap_section(run, prefix, draw),
        _stream_section(run, prefix, draw),
        _adaptation_section(run, prefix, curves, draw, colours),
        _transfer_section(run, prefix, draw, colours),
        _config_section(run, prefix),
    ]
    K = run.adapt_steps
    matrices = {k: [_mean_matrix(s, k, run.regression) for s in run.strategies] for k in sorted({0, K})}
    return sections, _run_data(run, curves, matrices)


def run_titles(runs: Sequence[RunData]) -> list[str]:
    """``experiment (scenario)`` per run, with the directory added where two would read the same."""
    titles = [f"{r.name} ({r.scenario})" for r in runs]
    return [f"{t} [{r.directory}]" if titles.count(t) > 1 else t for t, r in zip(titles, runs)]


def _long_table(runs: Sequence[RunData], titles: Sequence[str]) -> Table:
    """Every key metric, one row per (run, strategy); best marked within each run."""
    header = ["Run", "Strategy"] + [c.header(False) if c.better != "level" else f"{c.title} ↑ / MSE ↓"
                                    for c in COMPARISON_COLUMNS]
    rows = []
    for run, title in zip(runs, titles):
        values = [column_values(run, c) for c in COMPARISON_COLUMNS]
        flags = [best_flags(v, c, run.regression) for v, c in zip(values, COMPARISON_COLUMNS)]
        for r, s in enumerate(run.strategies):
            rows.append((Cell(title), Cell(s.label), *(
                Cell(format_stat(*values[c][r], column.key), best=flags[c][r], numeric=True)
                for c, column in enumerate(COMPARISON_COLUMNS))))
    return Table(tuple(header), tuple(rows), title="Key metrics per run and strategy",
                 caption="As learned (k = 0), mean ± 95% interval over seeds; bold: best within its run. "
                         "Score columns are accuracy (higher is better) for classification runs and the MSE "
                         "(lower is better) for regression runs.")


def comparison_section(runs: Sequence[RunData], titles: Sequence[str], draw: bool,
                       colours: dict[str, str]) -> Section:
    """Strategies x scenarios: the final score as a strategies x runs table, the key metrics per
    (run, strategy), best marked within each run, and one figure of bars per run and metric."""
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
        _long_table(runs, titles),
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
    return Section("comparison", "Comparison: strategies x scenarios", tuple(blocks))


def build(runs: Sequence[RunData], draw: bool = True) -> Report:
    """The report of one run directory, or the comparison of several followed by each run.

    With ``draw`` false no figure is drawn (nor matplotlib imported): a note takes each one's place.
    """
    if len(runs) == 1:
        run = runs[0]
        sections, data = run_sections(run, draw=draw)
        return Report(f"Lifelong-learning report: {run.name}", tuple(_run_intro(run)), tuple(sections),
                      {"format": "lifelong-report/1", "runs": [data]})
    titles = run_titles(runs)
    colours = figures.palette([label for run in runs for label in _strategy_label(run)])
    children, data = [], []
    for index, (run, title) in enumerate(zip(runs, titles), start=1):
        sections, run_data = run_sections(run, prefix=f"run{index}-", draw=draw, colours=colours)
        children.append(Section(f"run{index}", f"Run {index}: {title}", tuple(_run_intro(run)), tuple(sections)))
        data.append(run_data)
    intro = (paragraph(f"Comparison of {len(runs)} run directories: "
                       + "; ".join(f"{i}. {t}" for i, t in enumerate(titles, start=1)) + "."),)
    return Report("Lifelong-learning comparison: " + ", ".join(r.name for r in runs), intro,
                  (comparison_section(runs, titles, draw, colours), *children), {"format": "lifelong-report/1", "runs": data})
