"""Sharded checkpoints: model + optimizer + scheduler + RNG (accelerate) and the data position.

Layout under ``<run_dir>/checkpoints``: ``step-000010/`` (complete checkpoints only: they are
written as ``*.partial`` and renamed once every process has finished) and ``latest`` (a file
naming the newest complete one, replaced atomically). A crash mid-save leaves the previous
checkpoint in place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def ckpt_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


def save(accelerator, run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Collective: every process calls it. Returns the checkpoint directory."""
    root = ckpt_root(run_dir)
    final = root / f"step-{step:06d}"
    partial = root / f"step-{step:06d}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write(partial / "trainer_state.json", json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        atomic_write(root / "latest", final.name)
        for old in sorted(root.glob("step-??????"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
