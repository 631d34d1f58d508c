"""Lifelong-learning reports: ``index.html`` (self-contained) and ``report.md`` with ``figures/*.png``.

A report is a pure function of run directories' files (``config.json``, ``results.json``,
``tensors.npz``), so ``lifelong report`` works on old runs and the same directories always
give byte-identical files; a report whose inputs did not change is therefore not rendered
again (:data:`INPUTS_FILE`). One directory gives a single-run report; several give a
comparison (strategies x scenarios) followed by each run in full; a sweep directory gives a
sweep report.

Modules: :mod:`~simulator.report.data` (loading, means and intervals), :mod:`~.content`
(what is said), :mod:`~.compare` (A versus B: per-seed metrics, which mean nothing for a
strategy, paired differences), :mod:`~.sweeps` (the report of a sweep directory),
:mod:`~.figures` (matplotlib, imported only when a report is built), :mod:`~.document` (the
report as plain data), :mod:`~.html` and :mod:`~.markdown` (rendering).

Example:
    >>> from simulator.report import write_report
    >>> write_report(["reports/quickstart"], "reports/quickstart")  # doctest: +SKIP
    PosixPath('reports/quickstart/index.html')
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

from simulator.files import atomic_write, sha256_file
from simulator.loggers import log_files
from simulator.report.data import ReportError, load_run

__all__ = ["INPUTS_FILE", "ReportError", "default_out_dir", "write_report"]

INPUTS_FILE = ".report-inputs.json"
"""Written last by :func:`write_report`: the digest of what the report was made from and the
files it wrote, so that a report whose inputs did not change is not rendered again."""


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """Where a report goes by default: into the run directory itself for one run, and
    ``reports/comparison-<names>`` for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    names = "-".join(Path(d).resolve().name for d in run_dirs)
    return Path("reports") / ("comparison-" + re.sub(r"[^A-Za-z0-9._-]+", "_", names)[:80])


def _inputs_digest(run_dirs: Sequence[str | Path], draw: bool, pairs=None) -> str | None:
    """The sha256 of everything a report is a function of: ``draw``, ``pairs``, the simulator's
    and the strategies' sources (the report code, the metrics it shows, the strategy classes),
    and per run directory, in order, its name and the bytes of ``config.json``,
    ``results.json`` and ``tensors.npz``. ``None`` when one of them cannot be read (rendering
    then raises the error that names it)."""
    from importlib.util import find_spec

    package = Path(__file__).resolve().parents[1]
    # the strategies' classes say which metrics mean nothing for them (simulator.report.compare)
    spec = find_spec("strategies")
    folders = [package, *(Path(f) for f in (spec.submodule_search_locations or []))] if spec else [package]
    digest = hashlib.sha256(f"draw={draw}\npairs={json.dumps(pairs or [])}\n".encode())
    try:
        for folder in folders:
            for source in sorted(folder.rglob("*.py")):
                digest.update(f"{folder.name}/{source.relative_to(folder)}\0{sha256_file(source)}\n".encode())
        for run_dir in run_dirs:
            run_dir = Path(run_dir)
            digest.update(f"{run_dir.resolve().name}\0".encode())
            for name in ("config.json", "results.json", "tensors.npz"):
                digest.update(f"{name}\0{sha256_file(run_dir / name)}\n".encode())
            for log in log_files(run_dir):  # the training curves (simulator.loggers)
                digest.update(f"logs/{log.name}\0{sha256_file(log)}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def _is_current(out_dir: Path, digest: str | None) -> bool:
    """Whether ``out_dir`` holds, whole, the report whose inputs have ``digest``: its
    :data:`INPUTS_FILE` says so and every file listed there exists."""
    if digest is None:
        return False
    try:
        record = json.loads((out_dir / INPUTS_FILE).read_text(encoding="utf-8"))
        return record["inputs"] == digest and all((out_dir / name).is_file() for name in record["files"])
    except (OSError, ValueError, KeyError, TypeError):  # absent, damaged or foreign: render
        return False


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, draw: bool = True,
                 pairs: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write ``index.html``, ``report.md`` and ``figures/*.png`` for ``run_dirs`` into ``out_dir``.

    A single sweep directory (``sweep.json`` and ``results.db``, :mod:`simulator.report.sweeps`)
    gets a sweep report instead, rendered on every call.

    Each file is written atomically; PNGs in ``out_dir/figures`` that the new report does not
    use are removed so that the folder matches the Markdown. With ``draw`` false the report
    has every table but no figure (a note in each one's place) and takes milliseconds rather
    than seconds. When ``out_dir`` already holds the whole report of the same inputs (the run
    directories' files and names, ``draw`` and the simulator's sources, recorded in
    :data:`INPUTS_FILE`), nothing is rendered or written. Raises :class:`ReportError` (the
    message names the file) when a run directory is missing or unreadable.

    ``pairs`` (``[(A, B), ...]``: strategy names as the report shows them) restricts the
    pairwise tables to those pairs (default: every pair).

    Returns:
        The path of ``index.html``.
    """
    from simulator.report import content, sweeps

    if not run_dirs:
        raise ReportError("give at least one run directory")
    out_dir = Path(out_dir)
    found = [d for d in run_dirs if sweeps.is_sweep_dir(d)]
    if found:
        if len(run_dirs) > 1:
            raise ReportError(f"{found[0]}: a sweep directory is reported on its own (`lifelong report SWEEP_DIR`), "
                              "not with other directories")
        if pairs:
            raise ReportError(f"{found[0]}: --compare applies to run directories, not to a sweep")
        # results.db changes while a sweep runs (and its bytes with every checkpoint of SQLite's
        # journal): a sweep report is rendered every time, it takes milliseconds plus the figures
        return _write(sweeps.build(sweeps.load_sweep_dir(found[0]), draw=draw), out_dir, None)
    pairs = [tuple(p) for p in pairs] if pairs else None
    digest = _inputs_digest(run_dirs, draw, pairs)
    if _is_current(out_dir, digest):
        return out_dir / "index.html"
    return _write(content.build([load_run(d) for d in run_dirs], draw=draw, pairs=pairs), out_dir, digest)


def _write(report, out_dir: Path, digest: str | None) -> Path:
    """Render ``report`` into ``out_dir`` (each file atomically, stale figures removed) and
    record ``digest`` last."""
    from simulator.report import document, figures, html, markdown

    report = document.drawn(report, figures.draw_all)
    page = html.render(report)
    text, files = markdown.render(report)
    figure_dir = out_dir / markdown.FIGURE_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    # The record goes before any file changes and comes back after the last: a kill in between
    # leaves none, so the next call renders again.
    (out_dir / INPUTS_FILE).unlink(missing_ok=True)
    for relative, png in files.items():
        atomic_write(out_dir / relative, png)
    keep = {Path(relative).name for relative in files}
    for stale in sorted(figure_dir.glob("*.png")):
        if stale.name not in keep:
            stale.unlink()
    atomic_write(out_dir / "report.md", text.encode("utf-8"))
    atomic_write(out_dir / "index.html", page.encode("utf-8"))
    if digest is not None:
        record = {"inputs": digest, "files": ["index.html", "report.md", *files]}
        atomic_write(out_dir / INPUTS_FILE, json.dumps(record, indent=1).encode())
    return out_dir / "index.html"
