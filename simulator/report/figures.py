"""Report figures as PNG bytes: pure functions of the numbers they plot.

Matplotlib is imported here only, and only through its object API with the Agg canvas (no
pyplot, no global backend switch), so importing :mod:`simulator` stays light and a user's
interactive backend is left alone. PNGs carry no software or date metadata, so the same
numbers give the same bytes.

Every function takes display units (accuracy, or the MSE for regression) and a
``regression`` flag that sets the axis labels and which way is better.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Sequence

import numpy as np

DPI = 110
# Okabe-Ito: distinguishable with the common colour-vision deficiencies; its yellow is left out
# because it vanishes on white.
STRATEGY_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
                    "#8C564B", "#7F7F7F", "#BCBD22")
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "text.usetex": False,
    "image.interpolation": "nearest",
}


def palette(labels: Sequence[str]) -> dict[str, str]:
    """A colour per strategy label, in order; a report passes the same palette to every figure
    so that a strategy keeps its colour across runs."""
    return {label: STRATEGY_COLOURS[i % len(STRATEGY_COLOURS)] for i, label in enumerate(dict.fromkeys(labels))}


def plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` would otherwise start mathtext)."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


def score_label(regression: bool) -> str:
    """The axis label of a score, saying which way is better."""
    return "MSE (lower is better)" if regression else "accuracy (higher is better)"


def drawing_workers(figures: int) -> int:
    """How many processes :func:`draw_all` draws ``figures`` figures with, this one included:
    one per usable CPU core, at most one per figure, at most :envvar:`LIFELONG_REPORT_WORKERS`
    when that is set; 1 (this process alone) outside Linux, where ``fork`` is not the default
    and not always safe."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return 1
    cores = len(os.sched_getaffinity(0))
    limit = os.environ.get("LIFELONG_REPORT_WORKERS", "").strip()
    if limit.isdigit() and int(limit) >= 1:
        cores = min(cores, int(limit))
    return max(1, min(cores, figures))


def draw_all(renders: Sequence, costs: Sequence[float] | None = None) -> list[bytes]:
    """The PNGs of ``renders`` (functions of no arguments returning PNG bytes), in order.

    Drawing is matplotlib's Python, bound to one core. With several cores
    (:func:`drawing_workers`) this process forks helpers: each process, this one included,
    takes the next figure not yet taken (one byte pair from a shared pipe), the costliest first
    by ``costs`` (relative drawing times; default: equal), and draws it whole,
    so the bytes are those drawn here one after the other. A helper only draws and writes its
    PNGs back, then exits without running any cleanup of this process's. Whatever a helper did
    not deliver (it failed or was killed) is drawn here afterwards, so an error in a drawing
    is raised here, with its traceback.
    """
    import os
    import signal

    workers = drawing_workers(len(renders))
    if workers < 2 or len(renders) >= 2 ** 16:
        return [render() for render in renders]
    pngs: dict[int, bytes] = {}
    tickets_out, tickets_in = os.pipe()
    # Tickets: every index as two bytes. A read of two bytes from a pipe is atomic, so each
    # index goes to exactly one process; the pipe holds them all (64 KiB, 2 bytes each).
    order = sorted(range(len(renders)), key=lambda i: -costs[i]) if costs is not None else range(len(renders))
    os.write(tickets_in, b"".join(i.to_bytes(2, "big") for i in order))
    os.close(tickets_in)

    def take() -> int | None:
        ticket = os.read(tickets_out, 2)
        return int.from_bytes(ticket, "big") if len(ticket) == 2 else None

    helpers = []
    try:
        for _ in range(workers - 1):
            result_out, result_in = os.pipe()
            pid = os.fork()
            if pid == 0:  # a helper: draw, send, exit at once (no atexit, no stdio flush, no pytest)
                status = 1
                try:
                    # Ctrl-C is the calling process's to handle (a run's stop request announces
                    # itself and checkpoints there, not here); a helper finishes its figure.
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.close(result_out)
                    with os.fdopen(result_in, "wb") as out:
                        while (index := take()) is not None:
                            png = renders[index]()
                            out.write(index.to_bytes(2, "big") + len(png).to_bytes(8, "big") + png)
                    status = 0
                finally:
                    os._exit(status)
            os.close(result_in)
            helpers.append((pid, result_out))
        while (index := take()) is not None:
            pngs[index] = renders[index]()
    finally:
        os.close(tickets_out)
        for pid, result_out in helpers:
            with os.fdopen(result_out, "rb") as results:
                data = results.read()
            _, status = os.waitpid(pid, 0)
            if status == 0:
                pngs.update(_read_frames(data))
    return [pngs[i] if i in pngs else renders[i]() for i in range(len(renders))]


def _read_frames(data: bytes) -> dict[int, bytes]:
    """The PNGs a drawing helper sent: frames of its index (2 bytes), the PNG's length (8 bytes)
    and the PNG. Plain bytes, no unpickling: nothing in them is ever run."""
    pngs, at = {}, 0
    while at + 10 <= len(data):
        index, size = int.from_bytes(data[at:at + 2], "big"), int.from_bytes(data[at + 2:at + 10], "big")
        pngs[index] = data[at + 10:at + 10 + size]
        at += 10 + size
    return pngs


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _styled(draw):
    """Turn a function returning a matplotlib figure into one returning its PNG bytes, drawn
    and saved under the report's style (rcParams are read both when building and saving)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> bytes:
        import matplotlib

        with matplotlib.rc_context(_STYLE):
            buffer = io.BytesIO()
            fig = draw(*args, **kwargs)
            # The layout computed once, directly: savefig would otherwise draw the whole figure
            # without output just to run it, then draw it again.
            engine = fig.get_layout_engine()
            if engine is not None:
                engine.execute(fig)
                fig.set_layout_engine("none")
            fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None},
                        pil_kwargs={"compress_level": 1})  # zlib's fastest: encoding was a sixth of the time
        return buffer.getvalue()
    return wrapper


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def _spans_decades(values) -> bool:
    """Whether positive values (MSEs) range over more than two orders of magnitude, as when
    an adaptation diverges; a linear scale would then flatten every ordinary value to one colour."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return values.size > 1 and values.max() > 100 * values.min()


def _format(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"
    return text.lstrip("-") if float(text) == 0 else text  # no "-0.00" for a value that rounds to zero


@_styled
def heatmaps(matrices: Sequence[tuple[str, np.ndarray]], regression: bool, k: int):
    """The matrix R (rows: tasks learned, row 0 untrained; columns: task evaluated) per strategy.

    One panel per strategy on a shared colour scale, each cell annotated with its value (a cell
    the evaluation schedule did not score, or a non-finite one, is left blank); the
    cells R[j+1, j] (each task right after learning it) are outlined. Better is always
    yellow: accuracy uses viridis on [0, 1], the MSE viridis reversed over the range of its
    values (which has no natural top), on a log scale when they span more than two decades.
    """
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Rectangle

    rows, cols = _grid(len(matrices))
    N, T = matrices[0][1].shape  # N = T+1, or more rows when tasks recur and their order is unknown
    square = N == T + 1
    # A fixed layout in inches (the constrained layout engine cost 40% of this figure's drawing):
    # margins for the y tick labels and label, the x label, the title and the colour bar.
    cell, left, bottom, top, bar_room, gap_w, gap_h = 0.45, 1.0, 0.55, 0.35, 1.2, 1.0, 0.9
    width, height = T * cell, N * cell
    fig_w = left + cols * width + (cols - 1) * gap_w + bar_room
    fig_h = bottom + rows * height + (rows - 1) * gap_h + top
    fig = _figure(fig_w, fig_h, layout=None)
    values = _finite(np.stack([m for _, m in matrices]))
    finite = values[np.isfinite(values)]
    log = regression and _spans_decades(finite)
    if log:
        positive = finite[finite > 0]
        norm, cmap = LogNorm(float(positive.min()), float(positive.max())), "viridis_r"
    elif regression and finite.size and finite.max() > finite.min():
        norm, cmap = Normalize(float(finite.min()), float(finite.max())), "viridis_r"
    elif regression:  # nothing to contrast: one value, or none
        norm, cmap = Normalize(float(finite.min()) - 1 if finite.size else 0.0,
                               float(finite.max()) + 1 if finite.size else 1.0), "viridis_r"
    else:
        norm, cmap = Normalize(0.0, 1.0), "viridis"
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": left / fig_w, "right": (fig_w - bar_room) / fig_w, "bottom": bottom / fig_h,
        "top": 1 - top / fig_h, "wspace": gap_w / width, "hspace": gap_h / height})
    image = None
    annotate = T <= 12
    for ax, (label, m) in zip(axes.flat, matrices):
        m = _finite(m)
        image = ax.imshow(m, cmap=cmap, norm=norm, aspect="equal")
        ax.set_title(plain(label))
        ax.grid(False)
        ax.set_xticks(range(T))
        ax.set_yticks(range(N))
        ax.set_yticklabels(["0 (init)"] + [str(i) for i in range(1, N)])
        ax.set_xlabel("task evaluated")
        ax.set_ylabel("tasks learned" if square else "stream positions learned")
        for j in range(T if square else 0):  # black under white: visible on every colour of the map
            for colour, width in (("black", 2.6), ("white", 1.0)):
                ax.add_patch(Rectangle((j - 0.5, j + 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=width))
        if annotate:
            size = 8 if T <= 6 else 6.5
            for i in range(N):
                for j in range(T):
                    v = m[i, j]
                    if math.isnan(v):  # a cell the schedule did not score: left blank
                        continue
                    shade = float(norm(v)) if math.isfinite(v) and (v > 0 or not log) else 0.0
                    dark_cell = shade < 0.55 if not regression else shade > 0.45
                    ax.text(j, i, _format(v), ha="center", va="center", fontsize=size,
                            color="white" if dark_cell else "black")
    for ax in list(axes.flat)[len(matrices):]:
        ax.set_visible(False)
    grid_h = rows * height + (rows - 1) * gap_h
    bar_h = 0.8 * grid_h
    bar_axes = fig.add_axes(((fig_w - bar_room + 0.3) / fig_w, (bottom + (grid_h - bar_h) / 2) / fig_h,
                             0.14 / fig_w, bar_h / fig_h))
    bar = fig.colorbar(image, cax=bar_axes)
    bar.set_label(score_label(regression) + f", k = {k}" + (", log scale" if log else ""))
    return fig


def _task_colours(T: int):
    import matplotlib

    if T <= 10:
        return [matplotlib.colormaps["tab10"](j) for j in range(T)]
    return [matplotlib.colormaps["viridis"](0.9 * j / (T - 1)) for j in range(T)]


@_styled
def stream_lines(matrices: Sequence[tuple[str, np.ndarray]], regression: bool):
    """Each task's score along the stream (x: tasks learned), one panel per strategy.

    A task's line is dashed before it is learned and solid from then on, with a dot where it
    was learned, so forgetting reads as a solid line going the wrong way.
    """
    from matplotlib.lines import Line2D

    rows, cols = _grid(len(matrices))
    T = matrices[0][1].shape[1]
    fig = _figure(min(3.6 * cols + 1.4, 12.5), 2.8 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    colours = _task_colours(T)
    x = np.arange(T + 1)
    for ax, (label, m) in zip(axes.flat, matrices):
        m = _finite(m)
        for j in range(T):
            ax.plot(x[: j + 2], m[: j + 2, j], color=colours[j], linestyle=(0, (2, 2)), linewidth=1.0, alpha=0.7)
            ax.plot(x[j + 1:], m[j + 1:, j], color=colours[j], linewidth=1.8)
            ax.plot([j + 1], [m[j + 1, j]], "o", color=colours[j], markersize=4)
        ax.set_title(plain(label))
        ax.set_xticks(x)
        ax.set_xlabel("tasks learned")
        if not regression:
            ax.set_ylim(-0.03, 1.03)
    for ax in axes[:, 0]:
        ax.set_ylabel(score_label(regression))
    for ax in list(axes.flat)[len(matrices):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[j], linewidth=1.8) for j in range(T)] if T <= 12 else []
    names = [f"task {j}" for j in range(T)] if T <= 12 else []
    handles += [Line2D([], [], color="grey", linestyle=(0, (2, 2))), Line2D([], [], color="grey", linewidth=1.8)]
    names += ["before learned", "after learned"]
    fig.legend(handles, names, loc="outside right center", frameon=False)
    return fig


def _line_with_band(ax, x, mean, ci, colour: str, label: str, regression: bool, log: bool = False,
                    marker: str | None = "o", edges: bool = True) -> None:
    """A strategy's mean curve and its 95% band (where the interval is finite), the band
    outlined by thin ``edges``."""
    mean, ci = _finite(mean), _finite(ci)
    ax.plot(x, mean, color=colour, linewidth=1.8, marker=marker, markersize=3, label=plain(label))
    band = np.isfinite(ci)
    if not band.any():
        return
    # a band beyond what the score can be (accuracy outside [0, 1], a negative MSE) comes from
    # the t interval with few seeds; clipping keeps the axis readable
    low, high = (0.0, math.inf) if regression else (0.0, 1.0)
    lower, upper = np.clip(mean - ci, low, high), np.clip(mean + ci, low, high)
    if log:  # a band reaching 0 has no place on a log axis
        band &= lower > 0
        lower = np.where(band, lower, np.nan)
    ax.fill_between(x, lower, upper, where=band, color=colour, alpha=0.12, linewidth=0)
    # thin edges tell overlapping bands apart where their fills blend
    for edge in (lower, upper) if edges else ():
        ax.plot(x, edge, color=colour, linewidth=0.6, alpha=0.6)


ADAPTATION_PANELS = (
    ("new", "new tasks, before learning them\nR[j, j, k]"),
    ("just_learned", "the task just learned\nR[j+1, j, k]"),
    ("old", "old tasks at the end\nR[T, j, k], j < T-1"),
)


@_styled
def adaptation_curves(curves: Sequence[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]], regression: bool,
                      colours: dict[str, str]):
    """Score against adaptation steps k in three panels, one line per strategy with its 95% band.

    Args:
        curves: per strategy, ``{panel: (mean, ci95)}`` with arrays of length K+1 for the
            panels ``new``, ``just_learned`` and ``old`` (averaged over tasks, then over seeds).
        colours: the report's :func:`palette`.
    """
    fig = _figure(11.0, 3.4)
    axes = fig.subplots(1, 3, sharey=True)
    log = regression and _spans_decades([m for _, by_panel in curves for mean, _ in by_panel.values() for m in mean])
    for ax, (key, title) in zip(axes, ADAPTATION_PANELS):
        for label, by_panel in curves:
            mean, ci = by_panel[key]
            _line_with_band(ax, np.arange(len(mean)), mean, ci, colours[label], label, regression, log)
        ax.set_title(title)
        ax.set_xlabel("adaptation steps k")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if not regression:
            ax.set_ylim(-0.03, 1.03)
    if log:
        axes[0].set_yscale("log")  # shared by the panels: one diverging curve must not flatten the others
    axes[0].set_ylabel(score_label(regression) + (", log scale" if log else ""))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
               ncols=min(len(curves), 5), frameon=False)
    return fig


def _hbars(ax, labels: Sequence[str], groups: Sequence[tuple[str, np.ndarray, np.ndarray, float]], colours):
    """Horizontal bars: one row per label, one bar per group ``(name, means, cis, alpha)``.

    The values are written in a column right of the axes, where no bar or error bar can
    cover them (a minus sign on the zero line would otherwise vanish).
    """
    n, g = len(labels), len(groups)
    height = 0.8 / g
    span = []
    for gi, (name, means, cis, alpha) in enumerate(groups):
        means, cis = _finite(means), _finite(cis)
        y = np.arange(n) - 0.4 + height * (gi + 0.5)
        ax.barh(y, np.nan_to_num(means), height=height * 0.92, color=colours, alpha=alpha,
                xerr=np.nan_to_num(cis) if np.isfinite(cis).any() else None,
                error_kw={"elinewidth": 1, "capsize": 2.5, "ecolor": "#333333"}, label=name)
        for yi, m, c in zip(y, means, cis):
            text = "n/a" if not math.isfinite(m) else (_format(m) + (f" ± {_format(c)}" if math.isfinite(c) else ""))
            ax.annotate(text, (1.0, yi), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", va="center", ha="left", fontsize=7.5, color="#222222")
            if math.isfinite(m):
                half = c if math.isfinite(c) else 0.0
                span += [m - half, m + half]
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels([plain(s) for s in labels])
    ax.set_ylim(n - 0.5, -0.5)
    ax.axvline(0, color="#444444", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    lo, hi = min(span + [0.0]), max(span + [0.0])
    pad = 0.05 * ((hi - lo) or 1.0)
    ax.set_xlim(lo - pad, hi + pad)


@_styled
def transfer_bars(labels: Sequence[str], values: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
                  regression: bool, K: int, colours: dict[str, str]):
    """Forgetting and forward transfer side by side, per strategy, with 95% error bars: a solid
    bar as learned (k = 0) and, when K > 0, a light one after K adaptation steps.

    Args:
        labels: the strategies, in order (their colours follow the order).
        values: ``{"forgetting"|"forward_transfer": {"k0"|"kK": (means, cis)}}``, one entry per label.
        colours: the report's :func:`palette`.
    """
    from matplotlib.patches import Patch

    settings = [("k0", "as learned (k = 0)", 1.0)] + ([("kK", f"after {K} adaptation steps (k = {K})", 0.45)]
                                                       if K else [])
    fig = _figure(11.0, 0.9 + 0.55 * len(labels) * len(settings))
    axes = fig.subplots(1, 2)
    bar_colours = [colours[label] for label in labels]
    unit = " (MSE)" if regression else ""
    titles = {"forgetting": f"Forgetting{unit}: lower is better",
              "forward_transfer": f"Forward transfer{' (MSE reduction)' if regression else ''}: higher is better"}
    for ax, key in zip(axes, ("forgetting", "forward_transfer")):
        _hbars(ax, labels, [(name, *values[key][k], alpha) for k, name, alpha in settings], bar_colours)
        ax.set_title(titles[key])
    axes[1].set_yticklabels([])
    fig.legend([Patch(color="#555555", alpha=alpha) for _, _, alpha in settings], [name for _, name, _ in settings],
               loc="outside lower center", ncols=len(settings), frameon=False)
    return fig


@_styled
def comparison_bars(labels: Sequence[str], runs: Sequence[tuple[str, bool, dict[str, tuple[np.ndarray, np.ndarray]]]],
                    metrics: Sequence[tuple[str, str, str]], colours: dict[str, str]):
    """Strategies x scenarios: one column per run directory, one row per metric, bars per strategy.

    Args:
        labels: every strategy of the report, in order (a run lacking one shows "n/a").
        runs: per run, ``(title, regression, {metric: (means, cis)})`` with one entry per label.
        metrics: ``(metric, title for classification, title for regression)`` per row.
        colours: the report's :func:`palette`.
    """
    rows, cols = len(metrics), len(runs)
    fig = _figure(min(1.6 + 3.4 * cols, 16.0), 0.6 + rows * (0.6 + 0.32 * len(labels)))
    axes = fig.subplots(rows, cols, squeeze=False)
    bar_colours = [colours[label] for label in labels]
    for c, (title, regression, values) in enumerate(runs):
        for r, (metric, title_classification, title_regression) in enumerate(metrics):
            ax = axes[r, c]
            _hbars(ax, labels, [("", *values[metric], 1.0)], bar_colours)
            row_title = title_regression if regression else title_classification
            ax.set_title(plain(title) + "\n" + row_title if r == 0 else row_title)
            if c > 0:
                ax.set_yticklabels([])
    return fig


def pool_colours(n: int):
    """A light colour per pool (or evaluation column), distinct from the strategy palette's
    strong colours so that a pool is never read as a strategy."""
    import matplotlib

    if n <= 8:
        return [matplotlib.colormaps["Set2"](p) for p in range(n)]
    return [matplotlib.colormaps["viridis"](0.9 * p / (n - 1)) for p in range(n)]


@_styled
def online_accuracy(x: np.ndarray, curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
                    streams: Sequence[tuple[int, np.ndarray, np.ndarray]], pool_names: Sequence[str], window: int,
                    regression: bool, colours: dict[str, str]):
    """Online score over the stream, one line per strategy with its 95% band, above one strip
    per seed that shows its stream: the pool of each stretch as a colour, each switch as a tick.

    Args:
        x: the batch index of each plotted point (the stream, possibly thinned).
        curves: per strategy, ``(label, mean, ci95)`` at ``x``: the trailing moving average
            over ``window`` batches, averaged over seeds.
        streams: per seed, ``(seed, pools, switches)``: the pool index of every batch and the
            indices of the batches that start a task.
        pool_names: the names of the pool indices.
        colours: the report's :func:`palette`.
    """
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _figure(11.0, 3.6 + 0.22 * len(streams))
    top, strip = fig.subplots(2, 1, sharex=True, height_ratios=[5.0, 0.5 + 0.35 * len(streams)])
    for label, mean, ci in curves:
        # no band edges: over a long noisy stream they would bury the means
        _line_with_band(top, x, mean, ci, colours[label], label, regression, marker=None, edges=False)
    top.set_ylabel(score_label(regression) + f",\nmoving average over {window} batch{'' if window == 1 else 'es'}")
    if not regression:
        top.set_ylim(-0.03, 1.03)
    top.legend(loc="best", ncols=min(len(curves), 4), frameon=False)
    fills = pool_colours(len(pool_names))
    length = len(streams[0][1])
    strip.imshow(np.stack([pools for _, pools, _ in streams]), cmap=ListedColormap(fills),
                 norm=Normalize(-0.5, len(pool_names) - 0.5), aspect="auto", interpolation="nearest",
                 extent=(-0.5, length - 0.5, len(streams) - 0.5, -0.5))
    for row, (_, _, switches) in enumerate(streams):
        # ticks over the top third of the row only: a long stream's switches would otherwise
        # cover the pool colours
        strip.vlines(switches, row - 0.5, row - 0.15, colors="#222222", linewidth=0.5)
    strip.set_yticks(range(len(streams)))
    strip.set_yticklabels([f"seed {seed}" for seed, _, _ in streams])
    strip.grid(False)
    strip.set_xlim(-0.5, length - 0.5)
    strip.set_xlabel("batch")
    handles = [Patch(color=c) for c in fills] + [Line2D([], [], color="#222222", linewidth=0.8)]
    fig.legend(handles, [plain(name) for name in pool_names] + ["task switch"], loc="outside lower center",
               ncols=len(handles), frameon=False)
    return fig


@_styled
def recovery_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], regression: bool,
                    colours: dict[str, str]):
    """The online score against the number of batches since the last switch, one line per
    strategy with its 95% band over seeds.

    Args:
        curves: per strategy, ``(label, mean, ci95)`` of length n (distances 0..n-1).
        colours: the report's :func:`palette`.
    """
    fig = _figure(7.5, 3.6)
    ax = fig.subplots()
    for label, mean, ci in curves:
        _line_with_band(ax, np.arange(len(mean)), mean, ci, colours[label], label, regression)
    ax.set_xlabel("batches since the last task switch (0: the switch batch, before any of its labels)")
    ax.set_ylabel("online " + score_label(regression))
    ax.xaxis.get_major_locator().set_params(integer=True)
    if not regression:
        ax.set_ylim(-0.03, 1.03)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", frameon=False)
    return fig


@_styled
def anytime_lines(panels: Sequence[tuple[str, np.ndarray]], x: Sequence[int], column_names: Sequence[str], K: int,
                  regression: bool):
    """The anytime tensor along the stream: each evaluation column's score at each evaluation,
    one panel per strategy; solid as is (k = 0), dashed after K adaptation steps.

    Args:
        panels: per strategy, ``(label, A)`` with A of shape (H, J, K+1), averaged over seeds.
        x: per row h, the batch after which it was evaluated.
        column_names: the J columns (pools or tasks).
    """
    from matplotlib.lines import Line2D

    rows, cols = _grid(len(panels))
    J = len(column_names)
    fig = _figure(min(3.6 * cols + 1.6, 12.5), 2.8 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    colours = pool_colours(J)
    marker = "o" if len(x) <= 50 else None
    for ax, (label, A) in zip(axes.flat, panels):
        A = _finite(A)
        for j in range(J):
            ax.plot(x, A[:, j, 0], color=colours[j], linewidth=1.8, marker=marker, markersize=3)
            if K:
                ax.plot(x, A[:, j, K], color=colours[j], linewidth=1.2, linestyle=(0, (3, 2)))
        ax.set_title(plain(label))
        ax.set_xlabel("batches seen")
        if not regression:
            ax.set_ylim(-0.03, 1.03)
    for ax in axes[:, 0]:
        ax.set_ylabel(score_label(regression))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[j], linewidth=1.8) for j in range(J)] if J <= 12 else []
    names = [plain(name) for name in column_names] if J <= 12 else []
    handles.append(Line2D([], [], color="grey", linewidth=1.8))
    names.append("as is (k = 0)")
    if K:
        handles.append(Line2D([], [], color="grey", linewidth=1.2, linestyle=(0, (3, 2))))
        names.append(f"after {K} adaptation steps (k = {K})")
    fig.legend(handles, names, loc="outside right center", frameon=False)
    return fig


@_styled
def training_curves(panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray]]]],
                    colours: dict[str, str]):
    """What the runs logged along the way (:mod:`simulator.loggers`): one panel per tag, one
    line per strategy (its mean over seeds) against the run's iteration count; a panel whose
    positive values span more than two orders of magnitude (a loss that blew up) is drawn on a
    log scale.

    Args:
        panels: per tag, ``(tag, lines)`` with ``lines`` per strategy ``(label, steps, values)``.
        colours: the report's :func:`palette`.
    """
    rows, cols = _grid(len(panels))
    fig = _figure(min(3.6 * cols + 1.8, 12.5), 2.6 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (tag, lines) in zip(axes.flat, panels):
        for label, steps, values in lines:
            ax.plot(steps, _finite(values), color=colours[label], linewidth=1.4, label=plain(label),
                    marker="o" if len(steps) <= 30 else None, markersize=3)
        if _spans_decades(np.concatenate([values for _, _, values in lines])):
            ax.set_yscale("log")
            ax.minorticks_off()  # a decade's eight minor ticks each cost as much to lay out as a label
        ax.set_title(plain(tag))
        ax.set_xlabel("iteration of the run")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for line, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, line)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False)
    return fig
