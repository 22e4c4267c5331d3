"""User flags on outputs, stored durably in SQLite (WAL, synchronous=FULL, one transaction per
flag: a flag the server acknowledged survives a crash, and a crash mid-write leaves no half row).

Parameters are stored as strict JSON (no NaN or infinity), so the export is always valid JSON;
a row written before that rule reads back with such numbers as null."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    model TEXT, prompt TEXT NOT NULL, output TEXT NOT NULL,
    params TEXT NOT NULL, reason TEXT NOT NULL)"""


class FlagStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, prompt: str, output: str, reason: str, model: str | None, params: dict[str, Any]) -> int:
        row = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), model, prompt, output,
               json.dumps(params, sort_keys=True, allow_nan=False), reason)
        with self._lock, self._connect() as db:
            db.execute("PRAGMA synchronous=FULL")
            cur = db.execute("INSERT INTO flags (created_at, model, prompt, output, params, reason) "
                             "VALUES (?, ?, ?, ?, ?, ?)", row)
            return int(cur.lastrowid)

    def all(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM flags ORDER BY id").fetchall()
        return [{**dict(r), "params": json.loads(r["params"], parse_constant=lambda _: None)} for r in rows]
