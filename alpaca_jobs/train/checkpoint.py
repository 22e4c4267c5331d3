"""Sharded checkpoints with torch.distributed.checkpoint, written while training goes on.

Layout under ``<run_dir>/checkpoints``: ``step-000010/`` (complete checkpoints only: each is
written as ``*.partial`` and renamed once every process has written its shards) holding the
model and optimizer shards plus ``trainer_state.json`` (loop state and LR schedule), and
``latest`` (a file naming the newest complete one, replaced atomically). A crash mid-save
leaves the previous checkpoint in place.

``save`` blocks only while the shards are copied to host memory; a background thread writes
them (over a gloo group of its own, never the training one). At 7B that is ~81 GB of model and
optimizer state: written synchronously every 100 steps it cost 0.5-1 GPU-hour per run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.common.files import atomic_write


def ckpt_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def latest(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint and its trainer state, or None."""
    pointer = ckpt_root(run_dir) / "latest"
    if not pointer.is_file():
        return None
    path = ckpt_root(run_dir) / pointer.read_text().strip()
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return None
    return path, json.loads(state_file.read_text())


def remove_partials(run_dir: Path) -> None:
    """Rank 0, before any save: what a crash left half-written."""
    for stale in ckpt_root(run_dir).glob("*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


class Checkpointer:
    """One save in flight at a time; ``poll`` finishes it when its writes are done."""

    def __init__(self, run_dir: Path, rank: int, group, keep: int) -> None:
        self.root, self.rank, self.group, self.keep = ckpt_root(run_dir), rank, group, keep
        self._pending: tuple[Any, Path, Path, str] | None = None
        self.blocked_seconds = 0.0  # time training waited for checkpoints

    def save(self, model, optimizer, step: int, trainer_state: dict[str, Any], wait: bool) -> None:
        """Collective: every process calls it at the same step."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        t0 = time.perf_counter()
        self.wait()
        final = self.root / f"step-{step:06d}"
        partial = self.root / f"step-{step:06d}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        msd, osd = get_state_dict(model, optimizer)
        fut = dcp.async_save({"model": msd, "optim": osd}, checkpoint_id=str(partial),
                             process_group=self.group)
        self._pending = (fut, partial, final, json.dumps(trainer_state, indent=1))
        if wait:
            self.wait()
        self.blocked_seconds += time.perf_counter() - t0

    def poll(self) -> None:
        if self._pending is not None and self._pending[0].done():
            self._finish()

    def wait(self) -> None:
        if self._pending is not None:
            self._pending[0].result()
            self._finish()

    def _finish(self) -> None:
        fut, partial, final, state = self._pending
        self._pending = None
        fut.result()  # re-raise a failed write here, on the main thread
        if self.rank != 0:
            return
        # The coordinator's save finishes only after every rank's shards are written.
        atomic_write(partial / "trainer_state.json", state)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        atomic_write(self.root / "latest", final.name)
        for old in sorted(self.root.glob("step-??????"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def load(path: Path, model, optimizer) -> None:
    """Collective: restore model and optimizer shards in place."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])

