"""Lifelong-learning reports: ``index.html`` (self-contained) and ``report.md`` with ``figures/*.png``.

A report is a pure function of run directories' files (``config.json``, ``results.json``,
``tensors.npz``), so ``lifelong report`` works on old runs and the same directories always
give byte-identical files. One directory gives a single-run report; several give a
comparison (strategies x scenarios) followed by each run in full.

Modules: :mod:`~simulator.report.data` (loading, means and intervals), :mod:`~.content`
(what is said), :mod:`~.figures` (matplotlib, imported only when a report is built),
:mod:`~.document` (the report as plain data), :mod:`~.html` and :mod:`~.markdown` (rendering).

Example:
    >>> from simulator.report import write_report
    >>> write_report(["reports/quickstart"], "reports/quickstart")  # doctest: +SKIP
    PosixPath('reports/quickstart/index.html')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from simulator.files import atomic_write
from simulator.report.data import ReportError, load_run

__all__ = ["ReportError", "default_out_dir", "write_report"]


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """Where a report goes by default: into the run directory itself for one run, and
    ``reports/comparison-<names>`` for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    names = "-".join(Path(d).resolve().name for d in run_dirs)
    return Path("reports") / ("comparison-" + re.sub(r"[^A-Za-z0-9._-]+", "_", names)[:80])


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, draw: bool = True) -> Path:
    """Write ``index.html``, ``report.md`` and ``figures/*.png`` for ``run_dirs`` into ``out_dir``.

    Each file is written atomically; PNGs in ``out_dir/figures`` that the new report does not
    use are removed so that the folder matches the Markdown. With ``draw`` false the report
    has every table but no figure (a note in each one's place) and takes milliseconds rather
    than seconds. Raises :class:`ReportError` (the message names the file) when a run
    directory is missing or unreadable.

    Returns:
        The path of ``index.html``.
    """
    from simulator.report import content, html, markdown

    if not run_dirs:
        raise ReportError("give at least one run directory")
    report = content.build([load_run(d) for d in run_dirs], draw=draw)
    page = html.render(report)
    text, files = markdown.render(report)
    out_dir = Path(out_dir)
    figure_dir = out_dir / markdown.FIGURE_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    for relative, png in files.items():
        atomic_write(out_dir / relative, png)
    keep = {Path(relative).name for relative in files}
    for stale in sorted(figure_dir.glob("*.png")):
        if stale.name not in keep:
            stale.unlink()
    atomic_write(out_dir / "report.md", text.encode("utf-8"))
    atomic_write(out_dir / "index.html", page.encode("utf-8"))
    return out_dir / "index.html"
