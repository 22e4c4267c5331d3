"""The raw-response log: every paid reply, appended and fsynced before it is parsed.

The log is the job's memory. A restarted job replays it in order through the same parser,
filters and ROUGE-L pool, which rebuilds exactly the state it had: no reply is lost, no
request whose reply arrived is sent again, no instruction is kept twice. A line cut short by
a crash mid-write is dropped (its request is simply asked again) and the file is trimmed
back to the last whole line before new lines are appended.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RawLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def replay(self) -> Iterator[dict[str, Any]]:
        """Entries in the order they were written; trims a torn last line."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        good = data.rfind(b"\n") + 1
        if good < len(data):
            log.warning("%s: dropping a torn last line (%d bytes) from an interrupted write",
                        self.path, len(data) - good)
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
        for n, line in enumerate(data[:good].splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: unreadable line skipped", self.path, n)

    def append(self, entry: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
