"""Append-only JSONL files that survive a crash: each record is one line, flushed and fsynced
as soon as it exists, so a re-run reads what was already paid for and skips it."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a line cut short by a crash is skipped (and redone)."""
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: incomplete record (an interrupted write); it will be redone", path, lineno)
    return rows


class Appender:
    """Thread-safe: ``add(record)`` writes one line and makes it durable before returning."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell():
            self._fh.seek(self._fh.tell() - 1)
            if self._fh.read(1) != "\n":  # a crash cut the last line: start a fresh one
                self._fh.write("\n")

    def add(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            if self._fh.closed:  # the job is stopping; this record is redone next time
                log.warning("not recorded (stopping): %s", line[:200])
                return
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
