"""The spend journal (``spend.jsonl``): every attempt's worst-case cost, on disk before the
attempt is sent, so that no crash can make the job forget money it may have spent.

Lines (appended, fsynced):
  {"op": "reserve", "id": N, "index": I, "attempt": A, "usd": W}  before attempt A of request I
  {"op": "release", "id": N, "status": S}   the server answered HTTP S: nothing was billed
  {"op": "failed", "index": I, "attempts": A, "error": "..."}  request I was given up
A reply in ``raw.jsonl`` carries the id of the attempt that got it (``"reservation": N``): that
settles the reservation at the reply's real cost. A reservation neither released nor settled
(the attempt timed out, or the job was killed with it in flight) may have been billed: it stays
counted at its worst case, as ``unsettled_usd``, and the budget treats it as spent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alpaca_jobs.generate.rawlog import RawLog

JOURNAL_FILE = "spend.jsonl"


class BudgetExhausted(Exception):  # noqa: N818 - a stop reason, not a fault
    """A retry could not be reserved within max_usd: the request ends without a reply."""


class Ledger:
    """Reservations (open, released, settled), attempts and failed requests; thread-safe."""

    def __init__(self, run_dir: Path) -> None:
        self.log = RawLog(run_dir / JOURNAL_FILE)
        self.open: dict[int, float] = {}  # reservation id -> worst-case usd, not yet settled
        self.indices: set[int] = set()  # requests ever attempted
        self.attempts = self.failed_requests = self._next_id = 0
        self._lock = threading.Lock()

    def replay(self, replies: Iterable[dict[str, Any]]) -> None:
        """Rebuild from the journal and the replies already logged (``raw.jsonl``)."""
        for line in self.log.replay():
            op = line.get("op")
            if op == "reserve":
                self.open[line["id"]] = float(line["usd"])
                self.indices.add(line["index"])
                self.attempts += 1
                self._next_id = max(self._next_id, line["id"] + 1)
            elif op == "release":
                self.open.pop(line["id"], None)
            elif op == "failed":
                self.failed_requests += 1
        for entry in replies:
            self.open.pop(entry.get("reservation", -1), None)

    def reserve(self, index: int, attempt: int, usd: float, spent: float, cap: float | None) -> int:
        """Journal a reservation (fsynced) and return its id; BudgetExhausted if ``cap``
        is given and spent + everything reserved + ``usd`` would pass it."""
        with self._lock:
            if cap is not None and spent + sum(self.open.values()) + usd > cap:
                raise BudgetExhausted(f"request {index}: attempt {attempt} would pass max_usd")
            rid = self._next_id
            self._next_id += 1
            self.log.append({"op": "reserve", "id": rid, "index": index, "attempt": attempt,
                             "usd": round(usd, 9)})
            self.open[rid] = usd
            self.indices.add(index)
            self.attempts += 1
            return rid

    def release(self, rid: int, status: int) -> None:
        """The server answered with an error status: that attempt cost nothing."""
        with self._lock:
            self.log.append({"op": "release", "id": rid, "status": status})
            self.open.pop(rid, None)

    def settle(self, rid: int | None) -> None:
        """The reply of ``rid`` is in raw.jsonl: its real cost is in the spend totals now."""
        with self._lock:
            self.open.pop(rid, None)

    def failed(self, index: int, attempts: int, error: str) -> None:
        with self._lock:
            self.log.append({"op": "failed", "index": index, "attempts": attempts, "error": error[:500]})
            self.failed_requests += 1

    def reserved(self) -> float:
        with self._lock:
            return sum(self.open.values())

    def as_dict(self, replies: int) -> dict[str, Any]:
        """Counts for the run record: every attempt sent, and what may have been billed unseen."""
        with self._lock:
            return {"attempts": self.attempts, "failed_attempts": max(self.attempts - replies, 0),
                    "failed_requests": self.failed_requests,
                    "retries": max(self.attempts - len(self.indices), 0),
                    "unsettled_usd": round(sum(self.open.values()), 6)}

    def close(self) -> None:
        self.log.close()
