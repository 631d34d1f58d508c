"""The results database: SQLite (standard library) in the output directory.

Two tables: ``runs`` (one row per trial: config hash, grid point, strategy, seed, status,
error, failure kind, versions, timings, run directory) and ``metrics`` (long format: trial,
k, metric, value). Tensors stay in each trial's ``tensors.npz``. Only the sweep's driver
process writes; WAL mode and a busy timeout keep concurrent readers (``lifelong export``, a
report) safe.

A trial's status is ``pending`` (not run yet, or interrupted: it resumes from its
checkpoints), ``running`` (a process works on it now, or worked on it when its driver was
killed), ``done`` or ``failed``. A failed trial's ``failure`` says whose fault it was:
``environment`` (a file error such as a full disk, a killed worker, a database error: worth
retrying) or ``trial`` (the trial itself, e.g. a diverging loss: it fails the same way
again). A database written before failure kinds existed gets the column on opening, its old
failures of unknown kind (NULL).

Every sqlite3 error surfaces as a :class:`StoreError` naming the file, inside
:func:`errors_named`; ``damaged`` tells a file that is not a results database (a user's to
fix) from a failing disk or lock.

Example:
    >>> db = ResultsDB(":memory:")
    >>> db.mark("t1", config_hash="abc", point={"lr": 0.1}, strategy="finetune", seed=0, status="running")
    >>> db.status()
    {'t1': 'running'}
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

FAILURE_COLUMN = "failure TEXT CHECK (failure IN ('environment', 'trial'))"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    trial_id TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    point TEXT NOT NULL,
    strategy TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    versions TEXT,
    started REAL,
    finished REAL,
    seconds REAL,
    run_dir TEXT,
    {FAILURE_COLUMN}
);
CREATE TABLE IF NOT EXISTS metrics (
    trial_id TEXT NOT NULL REFERENCES runs(trial_id),
    k INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (trial_id, k, name)
);
"""
# The columns a results database must have (and failure, which opening adds where missing).
RUN_COLUMNS = {"trial_id", "config_hash", "point", "strategy", "seed", "status", "error", "versions",
               "started", "finished", "seconds", "run_dir"}
METRIC_COLUMNS = {"trial_id", "k", "name", "value"}


class StoreError(Exception):
    """``results.db`` cannot be used: ``reason`` says why (SQLite's message, or the table that
    is wrong); ``damaged`` is true for a file that is not a results database (garbage, corrupt,
    another program's database)."""

    def __init__(self, path: str | Path, reason: str, damaged: bool):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.damaged = path, reason, damaged


def _is_damage(err: sqlite3.Error) -> bool:
    # SQLITE_NOTADB: not an SQLite file; SQLITE_CORRUPT(_*): a damaged one.
    name = getattr(err, "sqlite_errorname", "") or ""
    return name == "SQLITE_NOTADB" or name.startswith("SQLITE_CORRUPT")


@contextmanager
def errors_named(path: str | Path) -> Iterator[None]:
    """Turn any sqlite3 error raised inside into a :class:`StoreError` naming ``path``."""
    try:
        yield
    except sqlite3.Error as err:
        raise StoreError(path, str(err), _is_damage(err)) from None


class ResultsDB:
    """A connection to ``results.db``; every write is one transaction.

    ``create=False`` opens an existing database without changing it (no schema, no WAL
    switch, no migration), for readers. Raises :class:`StoreError` (``damaged``) for a file
    whose tables are not those of a results database.
    """

    def __init__(self, path: str | Path, create: bool = True):
        self.path = path
        self.conn = sqlite3.connect(str(path), timeout=30.0)
        try:
            with errors_named(path):
                self.conn.execute("PRAGMA busy_timeout = 30000")
                self._check_tables(create)   # before any change: another program's file stays as it was
                if create:
                    if str(path) != ":memory:":
                        self.conn.execute("PRAGMA journal_mode = WAL")
                    with self.conn:
                        self.conn.executescript(SCHEMA)
                        if "failure" not in self._columns("runs"):  # a database of an earlier version
                            self.conn.execute(f"ALTER TABLE runs ADD COLUMN {FAILURE_COLUMN}")
        except BaseException:
            self.conn.close()
            raise

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}

    def _check_tables(self, create: bool) -> None:
        """Existing tables must be those of a results database; missing ones only when creating."""
        for table, required in (("runs", RUN_COLUMNS), ("metrics", METRIC_COLUMNS)):
            columns = self._columns(table)
            if (columns or not create) and not required <= columns:
                raise StoreError(self.path, f"table {table} is missing or has other columns", damaged=True)

    def close(self) -> None:
        self.conn.close()

    def mark(self, trial_id: str, *, config_hash: str, point: dict, strategy: str, seed: int,
             status: str, run_dir: str | None = None) -> None:
        """Insert a trial, or set the status of an existing one (keeping its metrics; the
        error of an earlier attempt is cleared)."""
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs (trial_id, config_hash, point, strategy, seed, status, run_dir) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(trial_id) DO UPDATE SET "
                "status = excluded.status, error = NULL, failure = NULL",
                (trial_id, config_hash, json.dumps(point, sort_keys=True), strategy, seed, status, run_dir))

    def start(self, trial_id: str) -> None:
        """A process starts working on the trial: ``running``, with its start time."""
        with self.conn:
            self.conn.execute("UPDATE runs SET status = 'running', started = ? WHERE trial_id = ?",
                              (time.time(), trial_id))

    def requeue_running(self) -> int:
        """Every ``running`` trial back to ``pending`` (no process works on it any more); returns how many."""
        with self.conn:
            return self.conn.execute("UPDATE runs SET status = 'pending' WHERE status = 'running'").rowcount

    def finish(self, trial_id: str, *, status: str, error: str | None, seconds: float,
               versions: dict[str, Any] | None, metrics: dict[int, dict[str, float | None]],
               failure: str | None = None) -> None:
        """Record a trial's outcome and its scalar metrics per adaptation step k; a failed
        trial's ``failure`` is ``"environment"`` or ``"trial"``."""
        rows = [(trial_id, k, name, None if v is None or not math.isfinite(v) else float(v))
                for k, named in metrics.items() for name, v in named.items()]
        with self.conn:
            self.conn.execute("DELETE FROM metrics WHERE trial_id = ?", (trial_id,))
            self.conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)
            self.conn.execute(
                "UPDATE runs SET status = ?, error = ?, failure = ?, seconds = ?, versions = ?, finished = ? "
                "WHERE trial_id = ?",
                (status, error, failure, seconds, json.dumps(versions or {}, sort_keys=True), time.time(),
                 trial_id))

    def status(self) -> dict[str, str]:
        """Every trial's status."""
        return dict(self.conn.execute("SELECT trial_id, status FROM runs"))

    def runs(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM runs ORDER BY strategy, point, seed")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def metrics(self, trial_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Long-format metric rows joined with their trial's strategy, seed and grid point."""
        query = ("SELECT m.trial_id, r.strategy, r.seed, r.point, m.k, m.name, m.value "
                 "FROM metrics m JOIN runs r USING (trial_id) ORDER BY r.strategy, r.point, r.seed, m.k, m.name")
        cur = self.conn.execute(query)
        wanted = None if trial_ids is None else set(trial_ids)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur if wanted is None or row[0] in wanted]

    def export_csv(self, path: str | Path) -> int:
        """Write every metric row to ``path`` as CSV; returns the count. Database errors are
        sqlite3 errors, file errors OSError (nothing is left at ``path`` then).

        Columns: ``trial_id, strategy, seed``, one column per grid key (sorted; the cell is
        empty where a trial does not depend on the key, e.g. another strategy's learning
        rate), then ``k, metric, value`` (empty for NaN). A grid value is written as it reads
        in TOML/JSON (``0.1``, ``true``, ``[16, 16]``), a string as it is.
        """
        rows = self.metrics()
        points = [json.loads(r["point"]) for r in rows]
        keys = sorted({key for point in points for key in point})
        out = [["trial_id", "strategy", "seed", *keys, "k", "metric", "value"]]
        for r, point in zip(rows, points):
            out.append([r["trial_id"], r["strategy"], r["seed"], *(_grid_cell(point, key) for key in keys),
                        r["k"], r["name"], _value_cell(r["value"])])
        _write_csv(path, out)
        return len(rows)


def _grid_cell(point: dict[str, Any], key: str) -> str:
    """The CSV cell of grid key ``key`` at ``point``: empty if absent, a string as it is, else JSON.

    Example:
        >>> [_grid_cell({"a": 0.1, "b": "adam", "c": [16], "d": True}, k) for k in "abcde"]
        ['0.1', 'adam', '[16]', 'true', '']
    """
    if key not in point:
        return ""
    value = point[key]
    return value if isinstance(value, str) else json.dumps(value)


def _value_cell(value: float | None) -> str:
    """A metric value as a CSV cell: Python's shortest exact form, empty for NaN (``None``)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


def _write_csv(path: str | Path, rows: list[list[Any]]) -> None:
    from simulator.files import atomic_write

    text = io.StringIO()
    csv.writer(text).writerows(rows)
    atomic_write(Path(path), text.getvalue().encode())


class RunDirectoryError(ValueError):
    """A run directory's ``results.json`` that cannot be exported: ``str(err)`` says why."""


def export_run_csv(run_dir: str | Path, path: str | Path) -> int:
    """Write the metrics of a run directory (``lifelong run``'s ``results.json``) to ``path``
    as CSV; returns the number of rows.

    Columns: ``strategy, seed, k, metric, value``: every scalar metric of every finished run
    at k = 0 (as learned) and k = K (after adaptation), in the order of the file (value empty
    for NaN). Raises :class:`RunDirectoryError` for a ``results.json`` that is not one
    ``lifelong run`` wrote, ``OSError`` for a file that cannot be read or written.
    """
    source = Path(run_dir) / "results.json"
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
        runs = [(str(run["strategy"]), int(run["seed"]), run["metrics"]) for run in document["runs"]]
        out = [["strategy", "seed", "k", "metric", "value"]]
        for strategy, seed, at in runs:
            for k in sorted(at, key=lambda name: int(name.removeprefix("k"))):
                for name, value in at[k].items():
                    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                        out.append([strategy, seed, int(k.removeprefix("k")), name, _value_cell(value)])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise RunDirectoryError(f"{source} is damaged or not the results.json of a run directory "
                                f"({type(err).__name__}: {err})") from None
    _write_csv(path, out)
    return len(out) - 1
