"""People's ratings in SQLite (no web framework needed to read them: the report does)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path


class Ratings:
    """The SQLite store: one row per (rater, item); rating again replaces the row."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS ratings (rater TEXT NOT NULL, item TEXT NOT NULL, "
                             "left_system TEXT NOT NULL, right_system TEXT NOT NULL, choice TEXT NOT NULL, "
                             "preferred TEXT NOT NULL, rated_at REAL NOT NULL, PRIMARY KEY (rater, item))")

    def put(self, rater: str, item: str, left: str, right: str, choice: str) -> None:
        preferred = {"A": left, "B": right}.get(choice, "tie")
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (rater, item, left, right, choice, preferred, time.time()))

    def rated(self, rater: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT item FROM ratings WHERE rater = ?", (rater,)).fetchall()
        return {r[0] for r in rows}

    def preferences(self) -> dict[str, dict[str, str]]:
        """rater -> item -> the system preferred, or "tie"."""
        out: dict[str, dict[str, str]] = {}
        with self._lock:
            rows = self._db.execute("SELECT rater, item, preferred FROM ratings ORDER BY rater").fetchall()
        for rater, item, pref in rows:
            out.setdefault(rater, {})[item] = pref
        return out

    def close(self) -> None:
        self._db.close()


def left_right(seed: int, rater: str, item: str, names: tuple[str, str]) -> tuple[str, str]:
    """Which system is shown left and right for this rater and item (stable, unpredictable)."""
    digest = hashlib.sha256(f"{seed}\0{rater}\0{item}".encode()).digest()
    return names if digest[0] & 1 else (names[1], names[0])
