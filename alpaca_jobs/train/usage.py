"""Each worker process measures its own wall and CPU time, per attempt, into the run dir."""

from __future__ import annotations

import json
import os
import resource
import time
import uuid
from pathlib import Path

from alpaca_jobs.common.files import atomic_write


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class UsageMeter:
    """Started when the worker starts (model loading is billed time too)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "usage"
        self.t0 = time.time()
        self.cpu0 = _cpu_seconds()
        self.rank = int(os.environ.get("RANK", "0"))
        self.attempt = os.environ.get("ALPACA_JOBS_ATTEMPT") or uuid.uuid4().hex[:12]
        self._last = 0.0

    def start(self) -> None:
        """Agree on one attempt id across processes (rank 0's)."""
        import torch.distributed as dist

        if dist.is_initialized():
            box = [self.attempt]
            dist.broadcast_object_list(box, src=0)
            self.attempt = box[0]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < 2.0:
            return
        self._last = now
        row = {
            "attempt": self.attempt,
            "rank": self.rank,
            "started": self.t0,
            "wall_seconds": now - self.t0,
            "cpu_seconds": _cpu_seconds() - self.cpu0,
        }
        atomic_write(self.dir / f"{self.attempt}-rank{self.rank}.json", json.dumps(row))
