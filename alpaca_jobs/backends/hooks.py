"""Launch hooks that run inside a worker (named in a ``Launch`` as ``"module:function"``).

Kept apart from the backends' submit code so a worker imports only what it calls."""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

log = logging.getLogger(__name__)


def submitit_env(_launch: Any) -> None:
    """One scheduler task per process (srun tasks, submitit's local tasks): RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the job's environment, through submitit's public
    helper (MASTER_ADDR: the first node of the job's node list; the port from the job id)."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def slurm_requeue(max_restarts: int) -> None:
    """Slurm's time-limit warning: the checkpoint is written, so requeue the job; the next
    attempt resumes from it. (On SIGTERM we do not: that is scancel, or a preemption that
    Slurm requeues by itself.)"""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if restarts >= max_restarts:
        log.warning("not requeueing job %s: already restarted %d times (slurm.max_requeues)", job_id, restarts)
        return
    log.info("requeueing Slurm job %s (restart %d of at most %d)", job_id, restarts + 1, max_restarts)
    subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)
