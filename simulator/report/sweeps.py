"""The report of a sweep directory (``lifelong report SWEEP_DIR``): metrics against each grid key.

A sweep directory (:mod:`simulator.sweep`) holds ``sweep.json`` (the grid and every trial: id,
grid point, strategy, seed), ``results.db`` (each trial's status and its scalar metrics at
k = 0 and k = K) and ``trials/<id>/`` (each trial's own run directory). The report reads the
first two only, so it is quick however many trials there are, and shows:

- the best grid point per strategy, at k = 0 and at k = K, by the mean over seeds of the main
  metric (final accuracy, or the online accuracy for a sweep of online runs; the MSE for
  regression, lowest best);
- per grid key, the metrics against the key's values, per strategy, at k = 0 and k = K: per
  seed, the mean over the grid points that share that value (the other keys' values), then
  mean ± 95% interval over seeds; and a figure of the main metric against each key;
- every grid point: seeds finished and failed, and the metrics at k = 0 and k = K.

k = K is each trial's own K (``evaluation.adapt_steps``, which a grid may vary). Numbers are
in the reader's unit (accuracy; for regression the MSE, where ``results.db`` holds minus it).

Example:
    >>> from simulator.report.sweeps import is_sweep_dir
    >>> is_sweep_dir("reports/quickstart")
    False
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simulator.metrics import METRICS, MetricInfo
from simulator.online_metrics import SHOWN_METRICS
from simulator.report.data import ReportError, mean_ci, to_display
from simulator.report.document import Block, Cell, Figure, Report, Section, Span, Table, paragraph


def _shown(key: str, table: dict[str, MetricInfo] = METRICS) -> tuple[str, str, str, str]:
    info = table[key]
    return key, info.header, info.header_regression, info.better


TASK_METRICS = tuple(_shown(key) for key in ("final_accuracy", "learning_accuracy", "forgetting", "backward_transfer",
                                            "forward_transfer", "new_task_adaptation"))
ONLINE_METRICS = (_shown("online_accuracy", SHOWN_METRICS), _shown("recovery_auc", SHOWN_METRICS),
                  _shown("final_accuracy"), _shown("forgetting", SHOWN_METRICS), _shown("ood_drop", SHOWN_METRICS))
"""(metric in results.db, title, title for regression, which way is better); the first is the main one."""


@dataclass(frozen=True)
class SweepTrial:
    """One trial as the report needs it: ``metrics[k][name]`` in score units (higher is
    better), ``k`` being 0 and the trial's K."""

    id: str
    point: dict[str, Any]
    strategy: str
    seed: int
    status: str
    metrics: dict[int, dict[str, float]]


@dataclass(frozen=True)
class SweepData:
    directory: str
    name: str
    grid: dict[str, list[Any]]
    trials: tuple[SweepTrial, ...]
    regression: bool
    online: bool

    @property
    def columns(self) -> tuple[tuple[str, str, str, str], ...]:
        return ONLINE_METRICS if self.online else TASK_METRICS


def is_sweep_dir(directory: str | Path) -> bool:
    """Whether ``directory`` is a sweep's output directory (``sweep.json``, no ``config.json``)."""
    directory = Path(directory)
    return (directory / "sweep.json").is_file() and not (directory / "config.json").exists()


def load_sweep_dir(directory: str | Path) -> SweepData:
    """Read ``sweep.json`` and ``results.db``; :class:`ReportError` naming the file when one is
    missing or damaged."""
    from simulator.store import ResultsDB, StoreError, errors_named

    directory = Path(directory)
    path = directory / "sweep.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        grid, listed = spec["grid"], spec["trials"]
        if not isinstance(grid, dict) or not isinstance(listed, list):
            raise TypeError("grid or trials of the wrong type")
        listed = [(str(t["id"]), dict(t["point"]), str(t["strategy"]), int(t["seed"])) for t in listed]
    except OSError as err:
        raise ReportError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ReportError(f"{path}: damaged, not written by `lifelong sweep` ({type(err).__name__}: {err})") from None
    db_path = directory / "results.db"
    if not db_path.is_file():
        raise ReportError(f"{db_path}: missing; no trial of this sweep has been recorded yet")
    try:
        db = ResultsDB(db_path, create=False)
        try:
            with errors_named(db_path):
                statuses, rows = db.status(), db.metrics()
        finally:
            db.close()
    except StoreError as err:
        raise ReportError(f"{db_path}: {'damaged or not a results database' if err.damaged else 'cannot be read'} "
                          f"({err.reason})") from None
    values: dict[str, dict[int, dict[str, float]]] = {}
    for row in rows:
        value = math.nan if row["value"] is None else float(row["value"])
        values.setdefault(row["trial_id"], {}).setdefault(int(row["k"]), {})[row["name"]] = value
    trials = tuple(SweepTrial(i, point, strategy, seed, statuses.get(i, "pending"), values.get(i, {}))
                   for i, point, strategy, seed in listed)
    online = any("online_accuracy" in by_k.get(0, {}) for by_k in values.values())
    return SweepData(directory.resolve().name, str(spec.get("name") or directory.name), grid, trials,
                     _regression(directory, trials), online)


def _regression(directory: Path, trials: Sequence[SweepTrial]) -> bool:
    """Whether the sweep's stream is a regression one, from a finished trial's results.json."""
    for trial in trials:
        if trial.status == "done":
            try:
                document = json.loads((directory / "trials" / trial.id / "results.json").read_text(encoding="utf-8"))
                return document.get("kind") == "regression"
            except (OSError, ValueError, AttributeError):
                continue
    return False


def _k_values(trial: SweepTrial, which: str) -> dict[str, float]:
    """The trial's metrics at k = 0 (``which == "k0"``) or at its own K (``"kK"``)."""
    if not trial.metrics:
        return {}
    return trial.metrics[0 if which == "k0" else max(trial.metrics)]


def _display(value, regression: bool, better: str):
    return to_display(value, regression) if better == "level" else np.asarray(value, dtype=float)


def _done(trials: Sequence[SweepTrial]) -> list[SweepTrial]:
    return [t for t in trials if t.status == "done" and t.metrics]


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _point_text(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value_text(v)}" for k, v in point.items()) or "(no grid key)"


def _format(mean: float, ci: float) -> str:
    from simulator.report.content import format_stat

    return format_stat(mean, ci)


def point_stats(sweep: SweepData, trials: Sequence[SweepTrial], which: str) -> dict[str, tuple[float, float]]:
    """(mean, ci95) over the finished trials (seeds) of one grid point and strategy, per
    metric of the report, in display units."""
    done = _done(trials)
    out = {}
    for key, _, _, better in sweep.columns:
        per_seed = [_k_values(t, which).get(key, math.nan) for t in done]
        mean, ci = mean_ci(_display(per_seed, sweep.regression, better)) if per_seed else (math.nan, math.nan)
        out[key] = (float(mean), float(ci))
    return out


def _groups(sweep: SweepData) -> dict[tuple[str, str], list[SweepTrial]]:
    """Trials by (grid point as sorted JSON, strategy), in the order of ``sweep.json``."""
    groups: dict[tuple[str, str], list[SweepTrial]] = {}
    for t in sweep.trials:
        groups.setdefault((json.dumps(t.point, sort_keys=True), t.strategy), []).append(t)
    return groups


def best_points(sweep: SweepData, which: str) -> list[tuple[str, dict[str, Any], int, dict[str, tuple[float, float]]]]:
    """Per strategy, the grid point whose mean over seeds of the main metric is best:
    ``(strategy, point, seeds finished, stats)``; strategies without a finished trial are left out."""
    key, _, _, better = sweep.columns[0]
    lower = better == "lower" or (better == "level" and sweep.regression)
    best: dict[str, tuple[float, dict[str, Any], int, dict[str, tuple[float, float]]]] = {}
    for (_, strategy), trials in _groups(sweep).items():
        stats = point_stats(sweep, trials, which)
        mean = stats[key][0]
        if not math.isfinite(mean):
            continue
        rank = mean if lower else -mean
        if strategy not in best or rank < best[strategy][0]:
            best[strategy] = (rank, trials[0].point, len(_done(trials)), stats)
    return [(strategy, point, n, stats) for strategy, (_, point, n, stats) in best.items()]


def against_key(sweep: SweepData, key: str, which: str) -> list[tuple[str, Any, int, dict[str, tuple[float, float]]]]:
    """Per strategy whose trials vary ``key`` and per value of it: ``(strategy, value, seeds,
    stats)``. Per seed, the metric is first averaged over the grid points sharing the value
    (the other keys' values); then mean ± 95% interval over the seeds that finished them all."""
    out = []
    strategies = list(dict.fromkeys(t.strategy for t in sweep.trials if key in t.point))
    for strategy in strategies:
        for value in sweep.grid.get(key, []):
            trials = [t for t in sweep.trials if t.strategy == strategy and key in t.point and t.point[key] == value]
            seeds = sorted({t.seed for t in trials})
            points = {json.dumps(t.point, sort_keys=True) for t in trials}
            done = _done(trials)
            # a seed counts when it finished at every point of this value: a mean over fewer
            # points would mix other settings in
            complete = [s for s in seeds if len({json.dumps(t.point, sort_keys=True) for t in done
                                                 if t.seed == s}) == len(points)]
            stats = {}
            for metric, _, _, better in sweep.columns:
                per_seed = [np.mean([_k_values(t, which).get(metric, math.nan) for t in done if t.seed == s])
                            for s in complete]
                mean, ci = mean_ci(_display(per_seed, sweep.regression, better)) if per_seed else (math.nan, math.nan)
                stats[metric] = (float(mean), float(ci))
            out.append((strategy, value, len(complete), stats))
    return out


def _headers(sweep: SweepData) -> list[str]:
    out = []
    for _, title, title_regression, better in sweep.columns:
        lower = better == "lower" or (better == "level" and sweep.regression)
        out.append(f"{title_regression if sweep.regression else title} {'↓' if lower else '↑'}")
    return out


def _k_title(which: str) -> str:
    return "As learned (k = 0)" if which == "k0" else "After adaptation (k = K, each trial's own K)"


def _best_table(sweep: SweepData, which: str) -> Table:
    rows = [(Cell(strategy), Cell(_point_text(point)), Cell(str(n), numeric=True),
             *(Cell(_format(*stats[key]), best=index == 0, numeric=True)
               for index, (key, *_rest) in enumerate(sweep.columns)))
            for strategy, point, n, stats in best_points(sweep, which)]
    main = _headers(sweep)[0]
    return Table(("Strategy", "Best grid point", "Seeds", *_headers(sweep)), tuple(rows),
                 f"The grid point with the best mean {main} (bold) over its finished seeds, per strategy; the other "
                 "columns at the same point. Mean ± 95% confidence half-width over seeds (Student's t).",
                 _k_title(which) + ": best grid point per strategy")


def _key_table(sweep: SweepData, key: str, which: str) -> Table:
    rows = [(Cell(strategy), Cell(_value_text(value)), Cell(str(n), numeric=True),
             *(Cell(_format(*stats[metric]), numeric=True) for metric, *_rest in sweep.columns))
            for strategy, value, n, stats in against_key(sweep, key, which)]
    others = [k for k in sweep.grid if k != key]
    caption = ("Mean ± 95% confidence half-width over seeds (Student's t)"
               + (f"; per seed, first averaged over the other grid keys ({', '.join(others)}): a seed counts when it "
                  "finished at every point with this value" if others else "") + ".")
    return Table(("Strategy", key, "Seeds", *_headers(sweep)), tuple(rows), caption,
                 f"{_k_title(which)}: against {key}")


def _points_table(sweep: SweepData) -> Table:
    main_key = sweep.columns[0][0]
    second = sweep.columns[1][0]
    rows = []
    for (_, strategy), trials in _groups(sweep).items():
        stats = {which: point_stats(sweep, trials, which) for which in ("k0", "kK")}
        failed = sum(t.status == "failed" for t in trials)
        rows.append((Cell(_point_text(trials[0].point)), Cell(strategy),
                     Cell(f"{len(_done(trials))}/{len(trials)}", numeric=True), Cell(str(failed), numeric=True),
                     *(Cell(_format(*stats[which][metric]), numeric=True)
                       for metric in (main_key, second) for which in ("k0", "kK"))))
    h = _headers(sweep)
    return Table(("Grid point", "Strategy", "Seeds done", "Failed", f"{h[0]}, k = 0", f"{h[0]}, k = K",
                  f"{h[1]}, k = 0", f"{h[1]}, k = K"), tuple(rows),
                 "Every grid point and strategy: mean ± 95% confidence half-width over its finished seeds.",
                 "Every grid point")


def _key_figure(sweep: SweepData, key: str, draw: bool, colours: dict[str, str]) -> Block:
    metric, title, title_regression, _ = sweep.columns[0]
    label = title_regression if sweep.regression else title
    if not draw:
        return paragraph(f"Not drawn: {label} against {key}.")
    series = {}
    for which in ("k0", "kK"):
        for strategy, value, _, stats in against_key(sweep, key, which):
            series.setdefault((strategy, which), []).append((value, *stats[metric]))
    lines = functools.partial(key_lines, key, sweep.grid[key], series, label, sweep.regression, colours)
    return Figure(f"sweep-{_safe(key)}", lines, f"{label} against {key} per strategy, at k = 0 and k = K",
                  f"{label} against {key}: mean over seeds (other grid keys averaged first), solid at k = 0 and "
                  "dashed at k = K; bars: 95% confidence interval over seeds.")


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "key"


def key_lines(key: str, values: Sequence[Any], series: dict[tuple[str, str], list[tuple[Any, float, float]]],
              label: str, regression: bool, colours: dict[str, str]) -> bytes:
    """PNG: the main metric against one grid key's values, a line per strategy (solid k = 0,
    dashed k = K) with 95% error bars; numeric values on a numeric axis (logarithmic when they
    span a decade or more), others as evenly spaced categories."""
    from simulator.report import figures

    @figures._styled
    def draw():
        fig = figures._figure(6.4, 3.4)
        ax = fig.add_subplot()
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        position = {json.dumps(v): (float(v) if numeric else i) for i, v in enumerate(values)}
        for (strategy, which), points in series.items():
            x = [position[json.dumps(v)] for v, _, _ in points]
            mean = np.array([m for _, m, _ in points], dtype=float)
            ci = np.where(np.isfinite([c for _, _, c in points]), [c for _, _, c in points], 0.0)
            # a t interval of few seeds reaches past what a score can be: clipped, as the run report's bands
            low, high = (0.0, math.inf) if regression else (0.0, 1.0)
            yerr = np.array([mean - np.clip(mean - ci, low, high), np.clip(mean + ci, low, high) - mean])
            ax.errorbar(x, mean, yerr=np.nan_to_num(yerr), color=colours.get(strategy, "#000000"),
                        linestyle="-" if which == "k0" else "--", marker="o", markersize=3, capsize=2,
                        linewidth=1.5, label=figures.plain(f"{strategy}, {'k = 0' if which == 'k0' else 'k = K'}"))
        if numeric and min(position.values()) > 0 and max(position.values()) >= 10 * min(position.values()):
            ax.set_xscale("log")
        if numeric:
            ax.set_xticks(sorted(set(position.values())), [figures.plain(_value_text(v)) for v in sorted(
                values, key=float)] if len(set(position.values())) == len(values) else None)
        else:
            ax.set_xticks(list(position.values()), [figures.plain(_value_text(v)) for v in values])
        ax.set_xlabel(figures.plain(key))
        ax.set_ylabel(figures.plain(f"{label} ({'lower' if regression else 'higher'} is better)"))
        ax.legend(loc="best")
        return fig

    return draw()


def build(sweep: SweepData, draw: bool = True) -> Report:
    """The sweep report: best point per strategy, metrics against each grid key (tables and a
    figure each), every grid point; at k = 0 and k = K."""
    from simulator.report import figures

    counts = {status: sum(t.status == status for t in sweep.trials) for status in ("done", "failed")}
    strategies = list(dict.fromkeys(t.strategy for t in sweep.trials))
    seeds = sorted({t.seed for t in sweep.trials})
    unit = "the MSE (lower is better)" if sweep.regression else "accuracy (higher is better)"
    intro: list[Block] = [paragraph(
        f"Sweep {sweep.name}: grid keys {', '.join(sweep.grid) or 'none'}; {len(sweep.trials)} trials "
        f"({counts['done']} done, {counts['failed']} failed, {len(sweep.trials) - sum(counts.values())} not finished); "
        f"strategies {', '.join(strategies)}; seeds {', '.join(map(str, seeds))}. Scores are {unit}"
        + ("; the sweep's trials are runs of the online loop" if sweep.online else "")
        + ". k = K is each trial's own number of adaptation steps. Sweep directory ", Span(sweep.directory, "code"),
        ". Each trial's own report: ", Span("lifelong report SWEEP_DIR/trials/<id>", "code"), ".")]
    if not _done(sweep.trials):
        intro.append(paragraph("No trial has finished yet.", warning=True))
    colours = figures.palette(strategies)
    sections = [Section("best", "Best grid point per strategy", tuple(_best_table(sweep, w) for w in ("k0", "kK")))]
    for number, key in enumerate(sweep.grid, start=1):
        blocks: list[Block] = [_key_table(sweep, key, w) for w in ("k0", "kK")]
        if _done(sweep.trials):
            blocks.insert(0, _key_figure(sweep, key, draw, colours))
        sections.append(Section(f"key{number}", f"Against {key}", tuple(blocks)))
    sections.append(Section("points", "Every grid point", (_points_table(sweep),)))
    data = {"format": "lifelong-sweep-report/1", "name": sweep.name, "grid": sweep.grid,
            "kind": "regression" if sweep.regression else "classification",
            "best": {w: [{"strategy": s, "point": p, "seeds": n, "metrics": {m: list(v) for m, v in st.items()}}
                         for s, p, n, st in best_points(sweep, w)] for w in ("k0", "kK")}}
    from simulator.files import to_json

    return Report(f"Sweep report: {sweep.name}", tuple(intro), tuple(sections), to_json(data))
