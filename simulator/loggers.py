"""Loggers: what a run reports along the way, written into its run directory.

A run (one strategy, one seed) reports numbers as it goes: the per-iteration values a
strategy's :class:`~strategies.base.TaskLoop` records (``loop.report(meta_loss=...)``), what
``observe`` returns in the online loop with the online accuracy, summaries of learned rates
(:meth:`~strategies.base.Strategy.log_scalars`), what ``learn`` returns per task, and after
each evaluated row the mean accuracy and loss over the tasks seen at k = 0 and k = K. The
runner hands them to a :class:`RunLog`, which writes them through its loggers:

- ``csv`` (:class:`CsvLogger`): ``logs/<label>-seed<seed>.csv``, one long-format table with the
  columns ``strategy, seed, task, step, tag, value``;
- ``tensorboard`` (:class:`TensorBoardLogger`, needs ``pip install 'lifelong[tensorboard]'``):
  event files in ``logs/tensorboard/<label>-seed<seed>/``.

``step`` counts the run's iterations (a task without a :class:`~strategies.base.TaskLoop`
counts one; the online phase counts batches after the pre-training iterations), so it grows
along the whole run; ``task`` is the stream position being learned (the task just learned
for ``eval/`` rows; in the online phase the batch's task id). Tags are ``train/<name>``
(inside a task), ``task/<name>`` (what ``learn`` returned), ``eval/accuracy_k<k>`` and
``eval/loss_k<k>`` (rows), ``online/<name>`` (the online loop).

Resuming never duplicates nor loses a row: every checkpoint stores :meth:`RunLog.commit`
(the CSV's length in bytes after an ``fsync``, TensorBoard's next step), and a resumed run
first cuts the CSV back to that length and restarts TensorBoard with ``purge_step`` there.
While a run is going its CSV is ``<name>.csv.part``; it is renamed to ``<name>.csv`` when the
run ends, so a ``.csv`` is always a whole run's log.

This module imports neither torch nor matplotlib (the report reads logs with it); TensorBoard
is imported only when its logger is opened.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> log = RunLog(out, LoggingSettings(loggers=("csv",), every=2), "maml", seed=0)
    >>> log.open(None)
    >>> log.record({"meta_loss": 0.5}, step=2, task=0, prefix="train/")
    >>> log.close()
    >>> (out / "logs" / "maml-seed0.csv").read_text().splitlines()
    ['strategy,seed,task,step,tag,value', 'maml,0,0,2,train/meta_loss,0.5']
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import numpy as np

LOGGERS = ("csv", "tensorboard")
"""The loggers an experiment file's ``[logging] loggers`` may name."""

LOG_DIR = "logs"
COLUMNS = ("strategy", "seed", "task", "step", "tag", "value")


@dataclass(frozen=True)
class LoggingSettings:
    """What a run logs (an experiment file's ``[logging]`` table).

    Attributes:
        loggers: names from :data:`LOGGERS`; empty: nothing is logged.
        every: iterations of a task (online: batches) between two logged values of the
            per-iteration numbers; each is the value at that iteration, not a mean.
    """

    loggers: tuple[str, ...] = ("csv",)
    every: int = 10


class LogError(ValueError):
    """A log that cannot be continued or read: ``str(err)`` names the file and says what to do."""


class Logger(Protocol):
    """Where a run's numbers go. Implementations open their files when made (fresh, or
    continuing from a :meth:`commit` mark a checkpoint saved)."""

    def scalar(self, tag: str, value: float, step: int, task: int) -> None:
        """Record ``value`` of ``tag`` at global ``step`` while learning stream position ``task``."""

    def commit(self) -> int:
        """Make what was recorded durable; the mark (plain int) to continue from after a kill."""

    def close(self, finished: bool = True) -> None:
        """Commit and release the files; ``finished``: the run's log is complete."""


def run_name(label: str, seed: int) -> str:
    """The file stem of a run's logs: the label with characters unsafe in file names replaced
    (and then a short digest of the label, so two labels never share a file).

    Example:
        >>> run_name("maml", 0), run_name("maml fo", 1)
        ('maml-seed0', 'maml_fo-ee85e1e3-seed1')
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).lstrip(".") or "_"
    if safe != label:
        safe += "-" + hashlib.sha256(label.encode()).hexdigest()[:8]
    return f"{safe}-seed{seed}"


class CsvLogger:
    """One run's long-format CSV (:data:`COLUMNS`), appended as the run goes.

    Rows go to ``<path>.part`` (buffered: no write per row); :meth:`commit` flushes and
    fsyncs and returns the file's length, which a checkpoint keeps. Made with ``resume`` (such
    a length), the logger cuts the file (``.part``, or the ``.csv`` of a run killed after it
    finished its log but before its results were committed) back to it and appends from
    there; without, it starts a new file. :meth:`close` renames ``.part`` to ``path``.
    """

    def __init__(self, path: Path, label: str, seed: int, resume: int | None = None):
        self.path, self.part = Path(path), Path(path).with_name(Path(path).name + ".part")
        self.label, self.seed = label, seed
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume is None:
            self.path.unlink(missing_ok=True)  # a log of an earlier attempt at this run
            self._file = open(self.part, "w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(COLUMNS)
            return
        source = self.part if self.part.exists() else self.path
        size = source.stat().st_size if source.exists() else -1
        if size < resume:
            what = "is missing" if size < 0 else f"has {size} bytes"
            raise LogError(f"log {source} {what}, but the checkpoint of {label} seed {seed} was taken when it had "
                           f"{resume}: the log was changed since. Delete the checkpoint to restart that run, or "
                           f"rerun with --overwrite")
        if source == self.path:
            os.replace(self.path, self.part)
        os.truncate(self.part, resume)  # the rows logged after the checkpoint come again
        self._file = open(self.part, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")

    def scalar(self, tag: str, value: float, step: int, task: int) -> None:
        self._writer.writerow((self.label, self.seed, task, step, tag, repr(float(value))))

    def commit(self) -> int:
        self._file.flush()
        os.fsync(self._file.fileno())
        return os.fstat(self._file.fileno()).st_size

    def close(self, finished: bool = True) -> None:
        if self._file.closed:
            return
        self.commit()
        self._file.close()
        if finished:
            os.replace(self.part, self.path)


def tensorboard_problem() -> str | None:
    """Why the ``tensorboard`` logger cannot be used here, or ``None`` (the package is installed)."""
    if importlib.util.find_spec("tensorboard") is None:
        return ("the tensorboard logger needs the tensorboard package, which is not installed: "
                "pip install 'lifelong[tensorboard]' (or remove \"tensorboard\" from [logging] loggers)")
    return None


class TensorBoardLogger:
    """One run's TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``), in ``directory``.

    A fresh run removes the directory first; a resumed one opens a writer with ``purge_step``
    at the :meth:`commit` mark, so that TensorBoard hides the events an interrupted attempt
    wrote after its checkpoint. Event files are TensorBoard's own append-only format.
    """

    def __init__(self, directory: Path, resume: int | None = None):
        problem = tensorboard_problem()
        if problem:
            raise LogError(problem)
        from torch.utils.tensorboard import SummaryWriter

        self.directory = Path(directory)
        if resume is None and self.directory.exists():
            shutil.rmtree(self.directory)
        elif resume is not None:
            _after_existing_event_files(self.directory)
        self._writer = SummaryWriter(str(self.directory), purge_step=resume)
        self._next = resume or 0
        self._open = True

    def scalar(self, tag: str, value: float, step: int, task: int) -> None:
        self._writer.add_scalar(tag, value, step)
        self._next = max(self._next, step + 1)

    def commit(self) -> int:
        self._writer.flush()
        return self._next

    def close(self, finished: bool = True) -> None:
        if self._open:
            self._writer.close()
            self._open = False


def _after_existing_event_files(directory: Path) -> None:
    """Wait (at most a second) until a new event file will sort after those in ``directory``.

    TensorBoard reads a run's event files in name order, and the name starts with the second
    the file was made: a resumed writer's file made in the same second as the killed one's
    could be read first, and its ``purge_step`` would then not hide the old events.
    """
    stamps = [int(p.name.split(".")[3]) for p in directory.glob("events.out.tfevents.*")
              if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


def _number(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is not one number (text, lists, larger tensors).
    A zero-argument callable is called first; a one-element tensor is read (a synchronisation)."""
    if callable(value):
        value = value()
    if hasattr(value, "numel"):  # a tensor; torch is not imported here
        return float(value) if value.numel() == 1 else None
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return float(value)
    return None


class RunLog:
    """The loggers of one (strategy, seed) run, its logging interval and its step count.

    The runner calls :meth:`open` once it knows whether the run resumes (with what
    :meth:`commit` returned into the checkpoint, or ``None``), :meth:`record` with the numbers,
    :meth:`commit` into every checkpoint, and :meth:`close` when the run ends. ``steps_done``
    is the number of iterations of the tasks finished so far (the runner advances it).
    """

    def __init__(self, out_dir: str | Path, settings: LoggingSettings, label: str, seed: int):
        self.directory = Path(out_dir) / LOG_DIR
        self.settings, self.label, self.seed = settings, label, seed
        self.name = run_name(label, seed)
        self.loggers: dict[str, Logger] = {}
        self.steps_done = 0

    @property
    def every(self) -> int:
        return self.settings.every

    def open(self, saved: Mapping[str, Any] | None) -> None:
        """Open every logger, fresh (``saved`` None) or where the checkpoint's ``saved`` left it.

        A checkpoint written without logs (by an older version) gives ``None`` too: the log
        then holds the rows from the resume on only.
        """
        marks = dict(saved["marks"]) if saved else {}
        self.steps_done = int(saved["steps_done"]) if saved else 0
        for name in self.settings.loggers:
            resume = marks.get(name)
            if name == "csv":
                self.loggers[name] = CsvLogger(self.directory / f"{self.name}.csv", self.label, self.seed, resume)
            elif name == "tensorboard":
                self.loggers[name] = TensorBoardLogger(self.directory / "tensorboard" / self.name, resume)
            else:
                raise LogError(f"unknown logger {name!r} (known: {', '.join(LOGGERS)})")

    def due(self, position: int) -> bool:
        """Whether the per-iteration numbers of iteration (or batch) ``position`` are logged."""
        return bool(self.loggers) and position % self.settings.every == 0

    def record(self, values: Mapping[str, Any], step: int, task: int, prefix: str = "") -> None:
        """Log every value of ``values`` that is one number (see :func:`_number`) as ``prefix + name``."""
        if not self.loggers:
            return
        for name, value in values.items():
            number = _number(value)
            if number is None:
                continue
            for logger in self.loggers.values():
                logger.scalar(prefix + name, number, step, task)

    def commit(self) -> dict[str, Any]:
        """Plain data for a checkpoint: the step count and each logger's mark, after making the logs durable."""
        return {"steps_done": self.steps_done, "marks": {name: lg.commit() for name, lg in self.loggers.items()}}

    def close(self, finished: bool = True) -> None:
        """Close every logger; ``finished`` (the run ended, or failed for good) completes the CSV."""
        for logger in self.loggers.values():
            logger.close(finished)
        self.loggers = {}


# -- reading logs back (reports) ----------------------------------------------------------------

Curves = dict[str, tuple[np.ndarray, np.ndarray]]
"""Per tag, ``(steps, values)`` in the order logged."""


def read_csv_log(path: Path) -> Curves:
    """The curves of one run's CSV log; :class:`LogError` naming the file and line when it is damaged."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            if tuple(next(rows, ())) != COLUMNS:
                raise LogError(f"{path}: not a lifelong log (its first line is not {','.join(COLUMNS)})")
            for line, row in enumerate(rows, start=2):
                try:
                    _, _, _, step, tag, value = row
                    steps, values = curves.setdefault(tag, ([], []))
                    steps.append(int(step))
                    values.append(float(value))
                except ValueError:
                    raise LogError(f"{path}: damaged at line {line} ({','.join(row)[:80]!r}); delete the file to "
                                   f"report without it") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LogError(f"{path}: cannot be read ({err})") from None
    return {tag: (np.array(s, dtype=np.int64), np.array(v, dtype=float)) for tag, (s, v) in curves.items()}


def read_run_logs(run_dir: str | Path, runs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Curves]:
    """The CSV logs of the given (label, seed) runs of a run directory, keyed by run; runs
    without a finished log (``logs/<name>.csv``) are left out."""
    directory = Path(run_dir) / LOG_DIR
    out = {}
    for label, seed in runs:
        path = directory / f"{run_name(label, seed)}.csv"
        if path.is_file():
            out[(label, seed)] = read_csv_log(path)
    return out


def log_files(run_dir: str | Path) -> list[Path]:
    """The finished CSV logs of a run directory, sorted (what a report may read)."""
    directory = Path(run_dir) / LOG_DIR
    return sorted(directory.glob("*.csv")) if directory.is_dir() else []


def mean_curve(per_seed: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One tag's curve averaged over seeds: at every step any seed logged, the mean of the
    seeds that logged it (a step logged twice by one seed counts its last value).

    Example:
        >>> s, v = mean_curve([(np.array([1, 2]), np.array([1.0, 3.0])), (np.array([2]), np.array([5.0]))])
        >>> s.tolist(), v.tolist()
        ([1, 2], [1.0, 4.0])
    """
    per_seed = list(per_seed)
    steps = np.unique(np.concatenate([s for s, _ in per_seed])) if per_seed else np.array([], dtype=np.int64)
    sums, counts = np.zeros(len(steps)), np.zeros(len(steps))
    for s, v in per_seed:
        last = {int(k): float(x) for k, x in zip(s, v)}
        index = np.searchsorted(steps, list(last))
        sums[index] += list(last.values())
        counts[index] += 1
    return steps, sums / counts
