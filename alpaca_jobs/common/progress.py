"""The progress file: where a running job stands, for whoever watches it.

Any kind's rank 0 may keep ``<run dir>/progress.json`` current (``write_snapshot``): what it is
doing, step n/N and the figures it has (loss, tokens/s, ETA, cost so far). ``alpaca-jobs
submit`` and ``pipeline`` draw a bar from it on the submitting terminal (``cli/follow.py``),
and a job's plain progress log lines (``plain_line``, logged off a terminal) read the same
everywhere, so the follower can leave them out. tqdm draws the bars (installed with
transformers; imported only when a bar is drawn).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from alpaca_jobs.common.files import atomic_write

log = logging.getLogger(__name__)
PROGRESS_FILE = "progress.json"
# A plain progress line as it reads in a log, whoever logged it: ``<logger>: step 12/33 loss ...``.
PLAIN_LINE = re.compile(r": step \d+/\d+ loss ")


@dataclass
class Snapshot:
    """Where a run stands; what ``progress.json`` holds."""

    phase: str  # what it is doing: "building the base model", "training", "done", ...
    step: int = 0
    total: int = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    cost_usd: float | None = None
    updated: float = 0.0  # Unix time
    label: str = ""  # what is progressing, shown before the bar (the kind, say)


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def status_text(s: Snapshot) -> str:
    """The figures after the bar (or in the plain line): loss, tokens/s, ETA, cost so far."""
    parts = [f"loss {s.loss:.4f}" if s.loss is not None else "loss ?",
             f"{s.tokens_per_second:,.0f} tok/s" if s.tokens_per_second is not None else "? tok/s",
             f"ETA {clock(s.eta_seconds)}",
             f"cost ${s.cost_usd:.4f}" if s.cost_usd is not None else "cost ?"]
    return " | ".join(parts)


def plain_line(s: Snapshot) -> str:
    return f"step {s.step}/{s.total} {status_text(s)}"


def read_snapshot(run_dir: Path) -> Snapshot | None:
    try:
        return Snapshot(**json.loads((Path(run_dir) / PROGRESS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None  # not written yet, or from another version


def write_snapshot(run_dir: Path, snap: Snapshot) -> None:
    """Replace the run's progress file (stamping ``updated``); never fails the run."""
    snap.updated = time.time()
    try:
        atomic_write(Path(run_dir) / PROGRESS_FILE, json.dumps(asdict(snap)) + "\n")
    except OSError as exc:  # progress is for people watching
        log.debug("could not write %s: %s", PROGRESS_FILE, exc)


def progress_bar(total: int, initial: int, stream: IO[str], desc: str):
    """A tqdm bar with the figures as its postfix."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, file=stream, desc=desc, unit="step",
                dynamic_ncols=True, mininterval=0, bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total}{postfix}")


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False
