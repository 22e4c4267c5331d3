"""The GPU-hours ledger: one SQLite row per run id, for every job on every backend.

Every run publishes its record here when it ends (``records.publish`` -> ``sinks``); a requeued
or resumed run keeps its id and updates its row. The file lives beside the runs
(``<runs dir>/ledger.sqlite3``; on Kubernetes that is the runs PVC) unless
``ALPACA_JOBS_LEDGER`` names another. WAL mode and a busy timeout let many jobs write at once
(``ALPACA_JOBS_LEDGER_JOURNAL=delete`` for a ledger on NFS written from several nodes).
``backfill`` imports the ``run.json`` files of runs that predate the ledger.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.record import RECORD_FILE, RecordError, RunRecord, load_record

LEDGER_ENV = "ALPACA_JOBS_LEDGER"
JOURNAL_ENV = "ALPACA_JOBS_LEDGER_JOURNAL"
LEDGER_FILE = "ledger.sqlite3"
BUSY_TIMEOUT_S = 60.0
SCHEMA_VERSION = 1

# Indexed columns, each taken from the record (the column is named after the dashboards'
# labels: stage = the record's job, cluster = its backend); the whole record is kept as JSON.
COLUMNS = {
    "run_id": "run_id", "stage": "job", "cluster": "backend", "gpu_type": "gpu_type",
    "status": "status", "started_at": "started_at", "finished_at": "finished_at",
    "gpu_hours": "gpu_hours", "cost_usd": "cost_usd", "api_cost_usd": "api_cost_usd",
    "target_usd": "target_usd",
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  stage TEXT NOT NULL,
  cluster TEXT NOT NULL,
  gpu_type TEXT,
  status TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  gpu_hours REAL NOT NULL DEFAULT 0,
  cost_usd REAL NOT NULL DEFAULT 0,
  api_cost_usd REAL NOT NULL DEFAULT 0,
  target_usd REAL,
  record TEXT NOT NULL,
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS runs_stage ON runs (stage);
CREATE INDEX IF NOT EXISTS runs_cluster ON runs (cluster);
CREATE INDEX IF NOT EXISTS runs_finished_at ON runs (finished_at);
"""
_UPSERT = (
    f"INSERT INTO runs ({', '.join(COLUMNS)}, record) VALUES "
    f"({', '.join(':' + c for c in COLUMNS)}, :record) ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in [*list(COLUMNS)[1:], "record"])
    + ", updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
)

log = logging.getLogger(__name__)


def ledger_path(run_dir: Path | None = None, runs_dir: Path | None = None) -> Path:
    """``ALPACA_JOBS_LEDGER``, else ``ledger.sqlite3`` in the runs dir (a run dir's parent)."""
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV])
    if runs_dir is None:
        runs_dir = run_dir.parent if run_dir is not None else Path("runs")
    return runs_dir / LEDGER_FILE


@contextmanager
def connect(path: Path, create: bool = True) -> Iterator[sqlite3.Connection]:
    """An open ledger (created on first use); UserError when the file is not a ledger."""
    if not create and not path.is_file():
        raise UserError(f"no ledger at {path}; pass --ledger, or --scan a runs dir to build one")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise UserError(f"cannot open the ledger {path}: {exc}") from None
    with closing(conn):
        try:
            _init(conn)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path} is not a usable ledger (SQLite says: {exc}); move it away "
                            f"or point {LEDGER_ENV} elsewhere") from None
        conn.row_factory = sqlite3.Row
        yield conn


def _init(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    _journal(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"ledger schema {version} is newer than this code's "
                                    f"{SCHEMA_VERSION}")
    if version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")  # one writer creates the schema; the others wait
        try:
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _journal(conn: sqlite3.Connection) -> None:
    """Set the journal mode (persistent, once per file): WAL, unless ``ALPACA_JOBS_LEDGER_JOURNAL``
    says ``delete`` (a ledger on a network filesystem written from several nodes: WAL needs
    all writers on one host). The switch needs the file to itself and SQLite does not wait for
    it (no busy handler there): retry while others hold it."""
    mode = os.environ.get(JOURNAL_ENV, "wal").strip().lower()
    if mode not in ("wal", "delete"):
        raise UserError(f"{JOURNAL_ENV}={mode!r}: use wal or delete")
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != mode:
        try:
            conn.execute(f"PRAGMA journal_mode = {mode}")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def _row(record: RunRecord) -> dict[str, Any]:
    row = {col: getattr(record, key) for col, key in COLUMNS.items()}
    row["record"] = json.dumps(record.to_dict(), sort_keys=True)
    return row


def upsert(conn: sqlite3.Connection, records: Iterable[RunRecord]) -> int:
    """Insert or update the rows of ``records`` in one transaction; returns how many."""
    rows = [_row(r) for r in records]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_UPSERT, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(rows)


def record_run(record: RunRecord, path: Path) -> None:
    """Upsert one run's record (what every job does when it ends)."""
    with connect(path) as conn:
        upsert(conn, [record])


def records(conn: sqlite3.Connection) -> list[RunRecord]:
    """Every run's full record, oldest first (a row that is not a record is skipped with a warning
    naming it: the ledger keeps it, ``run.json`` beside the run is the original)."""
    rows = conn.execute("SELECT run_id, record FROM runs ORDER BY started_at, run_id").fetchall()
    found = []
    for row in rows:
        try:
            found.append(RunRecord.from_json(row["record"], f"ledger row {row['run_id']!r}"))
        except RecordError as exc:
            log.warning("skipping %s", exc)
    return found


def records_in(runs_dir: Path) -> list[RunRecord]:
    """Every run's record in the ledger of ``runs_dir``, oldest first (none without a ledger).
    A file there that is not a ledger is a UserError naming it."""
    path = ledger_path(runs_dir=runs_dir)
    if not path.is_file():
        return []
    with connect(path, create=False) as conn:
        return records(conn)


def scan(runs_dir: Path) -> list[RunRecord]:
    """The records of ``<runs_dir>/*/run.json`` (unreadable ones are skipped with a warning)."""
    if not runs_dir.is_dir():
        raise UserError(f"--scan {runs_dir}: no such directory")
    found = []
    for path in sorted(runs_dir.glob(f"*/{RECORD_FILE}")):
        try:
            rec = load_record(path.parent)
        except RecordError as exc:
            log.warning("skipping %s", exc)
            continue
        if rec is not None:
            found.append(rec)
    return found


def backfill(conn: sqlite3.Connection, runs_dir: Path) -> int:
    """Import the run records already on disk under ``runs_dir``; returns how many."""
    return upsert(conn, scan(runs_dir))
