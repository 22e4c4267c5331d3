"""Whether a failed worker is worth starting again.

A run fails in one of two ways. Its own error (bad data, a bug, a model that does not load)
fails the same way every time: starting it again only burns GPU-hours. A lost peer (a node that
died, a process the kernel or an operator killed, a link that dropped) is the cluster's
failure, and the run resumes from its last checkpoint when started again; this is what
SkyPilot's managed jobs recover from by default and what they do not retry without being asked.

A worker that ends with its own error writes ``RUN_DIR/no-retry`` (one line: the error); a
backend's restart logic (the Slurm batch script's requeue after a failed srun) restarts the run
only when no worker wrote it. A worker killed by a signal writes nothing; its peers see the
collective fail ("Connection closed by peer") and write nothing either.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

NO_RETRY = "no-retry"

# What torch.distributed says when the other end of a collective went away (gloo's TCP pairs;
# NCCL's watchdog and aborted communicators; the c10d store).
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing",
             "NCCL communicator was aborted", "Watchdog caught collective operation timeout",
             "Broken pipe", "Socket Timeout", "connection refused")


def peer_lost(exc: BaseException) -> bool:
    """``exc`` is a collective failing because another process is gone (not this one's error)."""
    names = {t.__name__ for t in type(exc).__mro__}
    if names & {"DistNetworkError", "DistBackendError", "DistStoreError"}:
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | ConnectionError | TimeoutError) and \
        any(p.lower() in text for p in PEER_LOST)


def mark_no_retry(run_dir: Path, error: str) -> None:
    """Say, for the backend, that starting this run again would fail the same way."""
    from alpaca_jobs.common.files import atomic_write

    line = " ".join(error.split())[:500]
    with contextlib.suppress(OSError):  # on the failure path: the error is on its way to the log
        atomic_write(run_dir / NO_RETRY, line + "\n")
