"""One vocabulary of run states for every backend (as torchx's AppState), and each backend's
table from its scheduler's words to it.

A backend's ``status`` returns a ``State``; callers ask ``state.active`` instead of keeping
lists of scheduler words. ``State`` is a ``str`` (its value), so it prints, compares with and
serializes as the word ("COMPLETED").
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    SUBMITTED = "SUBMITTED"  # handed to the scheduler; nothing heard back yet
    PENDING = "PENDING"  # queued, or starting
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"  # stopped and queued again by the scheduler (a preemption, a requeue)
    SUSPENDED = "SUSPENDED"  # held by the scheduler, resumes by itself
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # stopped by a person (cancel), resumable with submit --run-id
    INTERRUPTED = "INTERRUPTED"  # stopped by a signal after a checkpoint (local runs)
    STOPPED = "STOPPED"  # a server that was shut down (its normal end)
    DELETED = "DELETED"  # the scheduler no longer knows the job
    UNKNOWN = "UNKNOWN"  # the scheduler could not be asked, or said something unknown

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def active(self) -> bool:
        """Still queued or running: it may yet change by itself."""
        return self in _ACTIVE


_ACTIVE = frozenset({State.SUBMITTED, State.PENDING, State.RUNNING, State.REQUEUED, State.SUSPENDED})

# sacct's job states (slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES).
SLURM = {
    "PENDING": State.PENDING, "CONFIGURING": State.PENDING, "REQUEUE_HOLD": State.PENDING,
    "RUNNING": State.RUNNING, "COMPLETING": State.RUNNING, "RESIZING": State.RUNNING,
    "SIGNALING": State.RUNNING, "STAGE_OUT": State.RUNNING,
    "REQUEUED": State.REQUEUED, "REQUEUE_FED": State.REQUEUED,
    "SUSPENDED": State.SUSPENDED, "COMPLETED": State.COMPLETED, "CANCELLED": State.CANCELLED,
    "FAILED": State.FAILED, "TIMEOUT": State.FAILED, "OUT_OF_MEMORY": State.FAILED, "NODE_FAIL": State.FAILED,
    "BOOT_FAIL": State.FAILED, "DEADLINE": State.FAILED, "PREEMPTED": State.FAILED,
}

# A run record's status (ops/record.py), where the backend reads the record (local, finished runs).
RECORD = {"running": State.RUNNING, "completed": State.COMPLETED, "failed": State.FAILED,
          "interrupted": State.INTERRUPTED, "stopped": State.STOPPED}


def slurm_state(word: str) -> State:
    """sacct's State column ("CANCELLED by 0", "RUNNING") as a State."""
    head = word.split()[0] if word.strip() else ""
    return SLURM.get(head, State.UNKNOWN)


def record_state(status: str) -> State:
    return RECORD.get(status, State.UNKNOWN)


def is_active(state: str) -> bool:
    """``state`` (a State or its word, e.g. a pipeline file's) is still queued or running."""
    try:
        return State(state).active
    except ValueError:
        return False
