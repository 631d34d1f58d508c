"""The results database: SQLite (standard library) in the output directory.

Two tables: ``runs`` (one row per trial: config hash, grid point, strategy, seed, status,
error, versions, timings, run directory) and ``metrics`` (long format: trial, k, metric,
value). Tensors stay in each trial's ``tensors.npz``. Only the sweep's driver process writes;
WAL mode and a busy timeout keep concurrent readers (``lifelong export``, a report) safe.

Example:
    >>> db = ResultsDB(":memory:")
    >>> db.mark("t1", config_hash="abc", point={"lr": 0.1}, strategy="finetune", seed=0, status="running")
    >>> db.status()
    {'t1': 'running'}
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
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
    run_dir TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    trial_id TEXT NOT NULL REFERENCES runs(trial_id),
    k INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (trial_id, k, name)
);
"""


class ResultsDB:
    """A connection to ``results.db``; every write is one transaction."""

    def __init__(self, path: str | Path):
        self.path = path
        self.conn = sqlite3.connect(str(path), timeout=30.0)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        if str(path) != ":memory:":
            self.conn.execute("PRAGMA journal_mode = WAL")
        with self.conn:
            self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def mark(self, trial_id: str, *, config_hash: str, point: dict, strategy: str, seed: int,
             status: str, run_dir: str | None = None) -> None:
        """Insert a trial, or set the status of an existing one (keeping its results)."""
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs (trial_id, config_hash, point, strategy, seed, status, started, run_dir) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(trial_id) DO UPDATE SET "
                "status = excluded.status, started = excluded.started",
                (trial_id, config_hash, json.dumps(point, sort_keys=True), strategy, seed, status,
                 time.time(), run_dir))

    def finish(self, trial_id: str, *, status: str, error: str | None, seconds: float,
               versions: dict[str, Any] | None, metrics: dict[int, dict[str, float | None]]) -> None:
        """Record a trial's outcome and its scalar metrics per adaptation step k."""
        rows = [(trial_id, k, name, None if v is None or not math.isfinite(v) else float(v))
                for k, named in metrics.items() for name, v in named.items()]
        with self.conn:
            self.conn.execute("DELETE FROM metrics WHERE trial_id = ?", (trial_id,))
            self.conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)
            self.conn.execute(
                "UPDATE runs SET status = ?, error = ?, seconds = ?, versions = ?, finished = ? "
                "WHERE trial_id = ?",
                (status, error, seconds, json.dumps(versions or {}, sort_keys=True), time.time(), trial_id))

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
        """Write every metric row (with status of its run) to ``path`` as CSV; returns the count."""
        rows = self.metrics()
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["trial_id", "strategy", "seed", "point", "k", "metric", "value"])
            for r in rows:
                writer.writerow([r["trial_id"], r["strategy"], r["seed"], r["point"], r["k"], r["name"],
                                 "" if r["value"] is None else repr(r["value"])])
        return len(rows)
