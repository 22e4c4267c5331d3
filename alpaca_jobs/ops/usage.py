"""Each worker process measures its own wall and CPU time, per attempt, into the run dir.

The meter starts from the process's own start time (``psutil``), so an attempt that dies while
importing or loading the model still bills the time it held its GPUs.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
import time
import uuid
from pathlib import Path

from alpaca_jobs.common.files import atomic_write
from alpaca_jobs.ops.record import Usage


def read_usage(run_dir: Path) -> Usage:
    """Sum over attempts: wall = the slowest process of each attempt; CPU = all processes."""
    per_attempt: dict[str, float] = {}
    cpu = 0.0
    for f in sorted((run_dir / "usage").glob("*.json")):
        try:
            u = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a file being replaced right now; the next read sees it
        per_attempt[u["attempt"]] = max(per_attempt.get(u["attempt"], 0.0), u["wall_seconds"])
        cpu += u["cpu_seconds"]
    return Usage(len(per_attempt), sum(per_attempt.values()), cpu)




def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rc = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime


def _process_start() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no psutil or no /proc: from now, which undercounts only imports
        return time.time()


def attempt_id() -> str:
    """One id per attempt, the same in every process of it, without any communication: the
    scheduler's job id and restart count (Slurm, torchrun), submitit's local job, else new."""
    env = os.environ
    if env.get("ALPACA_JOBS_ATTEMPT"):
        return env["ALPACA_JOBS_ATTEMPT"]
    if env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_RESTART_COUNT', '0')}"
    if env.get("TORCHELASTIC_RUN_ID") and env.get("TORCHELASTIC_RUN_ID") != "none":
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}-{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"local-{env['SUBMITIT_LOCAL_JOB_ID']}"
    return uuid.uuid4().hex[:12]


class UsageMeter:
    """This process's wall and CPU time since it started, written to ``usage/`` as it goes."""

    def __init__(self, run_dir: Path, rank: int | None = None) -> None:
        self.dir = run_dir / "usage"
        self.t0 = _process_start()
        self.cpu0 = 0.0  # getrusage counts from process start too
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.attempt = attempt_id()
        self.host = socket.gethostname()  # where this process ran (a multi-node run bills every node)
        self._last = 0.0
        self._lock = threading.Lock()  # the live-metrics thread ticks too (one temp file name)

    def adopt(self, attempt: str) -> None:
        """Bill under ``attempt`` from now on (rank 0's, shared once the process group is up:
        the pods of a Kubernetes set have no common id of their own). The rows written under
        the old id move to the new one."""
        if attempt == self.attempt:
            return
        with self._lock:
            old = self.dir / f"{self.attempt}-rank{self.rank}.json"
            self.attempt = attempt
        old.unlink(missing_ok=True)
        self.tick(force=True)

    def start(self) -> None:
        """Write the first figures now: from here on a crash still bills this attempt."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tick(force=True)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < 2.0:
            return
        with self._lock:
            self._last = now
            row = {"attempt": self.attempt, "rank": self.rank, "host": self.host, "started": self.t0,
                   "wall_seconds": now - self.t0, "cpu_seconds": _cpu_seconds() - self.cpu0}
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.dir / f"{self.attempt}-rank{self.rank}.json", json.dumps(row))
