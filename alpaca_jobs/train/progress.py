"""Training made visible while it runs: what it is doing, and a progress bar on rank 0.

Rank 0 keeps ``progress.json`` in the run directory current (phase, step n/N, loss, tokens/s,
ETA, cost so far) and shows the same figures on its own stdout: a tqdm bar when stdout is a
terminal (torchrun in a shell), else one plain log line every ``train.progress_every_seconds``
(batch logs: no carriage returns in the file). ``alpaca-jobs submit`` follows a run through
its log file, never a terminal, so ``Follower`` draws the bar on the submitting terminal from
``progress.json`` and prints the log above it.

tqdm (already installed with transformers) draws the bar; rich would need a new dependency.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from alpaca_jobs.common.files import atomic_write

log = logging.getLogger(__name__)
PROGRESS_FILE = "progress.json"
WRITE_EVERY = 0.5  # seconds between progress.json updates (a step can take milliseconds)
# The plain progress line, as it reads in a log: ``step 12/33 loss ... ETA ... cost ...``.
PLAIN_LINE = re.compile(r"alpaca_jobs\.train\.progress: step \d+/\d+ ")


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


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def status_text(s: Snapshot) -> str:
    """The figures after the bar (or in the plain line): loss, tokens/s, ETA, cost so far."""
    parts = [f"loss {s.loss:.4f}" if s.loss is not None else "loss ?",
             f"{s.tokens_per_second:,.0f} tok/s" if s.tokens_per_second is not None else "? tok/s",
             f"ETA {_clock(s.eta_seconds)}",
             f"cost ${s.cost_usd:.4f}" if s.cost_usd is not None else "cost ?"]
    return " | ".join(parts)


def plain_line(s: Snapshot) -> str:
    return f"step {s.step}/{s.total} {status_text(s)}"


def read_snapshot(run_dir: Path) -> Snapshot | None:
    try:
        return Snapshot(**json.loads((run_dir / PROGRESS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None  # not written yet, or from another version


def _bar(total: int, initial: int, stream: IO[str]):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, file=stream, desc="train", unit="step",
                dynamic_ncols=True, mininterval=0, bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total}{postfix}")


class Progress:
    """Rank 0's reporter. ``phase(text)`` says what is happening before the first step;
    ``step(...)`` after each one; ``close()`` at the end. Other ranks get ``enabled=False``."""

    def __init__(self, run_dir: Path, enabled: bool = True, every_seconds: float = 10.0,
                 stream: IO[str] | None = None, cost: Callable[[], float | None] | None = None) -> None:
        self.run_dir, self.enabled, self.every = run_dir, enabled, every_seconds
        self.stream = stream if stream is not None else sys.stdout
        self.cost = cost or (lambda: None)
        self.tty = enabled and _isatty(self.stream)
        self.snap = Snapshot("starting")
        self.recent: deque[tuple[float, int]] = deque(maxlen=20)  # (seconds, tokens) of last steps
        self._bar = None
        self._written = self._printed = 0.0

    def phase(self, text: str) -> None:
        """A log line saying what the job is doing now (loading, building, compiling...)."""
        if not self.enabled:
            return
        log.info("%s", text)
        self.snap.phase = text
        self._write(force=True)

    def start(self, step: int, total: int) -> None:
        self.snap.step, self.snap.total = step, total
        if self.enabled and self.tty:
            self._bar = _bar(total, step, self.stream)

    def step(self, step: int, loss: float, seconds: float, tokens: int) -> None:
        """One optimizer step done: ``seconds`` it took, ``tokens`` it computed (all ranks)."""
        if not self.enabled:
            return
        self.recent.append((seconds, tokens))
        secs = sum(s for s, _ in self.recent)
        s = self.snap
        s.phase, s.loss = "training", loss
        s.tokens_per_second = sum(t for _, t in self.recent) / max(secs, 1e-9)
        s.eta_seconds = (s.total - step) * secs / len(self.recent)
        advanced, s.step = step - s.step, step
        now = time.monotonic()
        last = step >= s.total
        if last or self._bar is not None or now - self._printed >= self.every or self._printed == 0:
            s.cost_usd = self.cost()  # reads the usage files: only as often as shown
        self._write(force=last)
        if self._bar is not None:
            self._bar.set_postfix_str(status_text(s), refresh=False)
            self._bar.update(advanced)
        elif last or self._printed == 0 or now - self._printed >= self.every:
            log.info("%s", plain_line(s))
            self._printed = now

    def close(self, phase: str = "done") -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.snap.phase = phase
        self._write(force=True)

    def _write(self, force: bool) -> None:
        now = time.time()
        if not force and now - self._written < WRITE_EVERY:
            return
        self._written = self.snap.updated = now
        try:
            atomic_write(self.run_dir / PROGRESS_FILE, json.dumps(asdict(self.snap)) + "\n")
        except OSError as exc:  # progress is for people watching; never fail the run on it
            log.debug("could not write %s: %s", PROGRESS_FILE, exc)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


class Follower:
    """``alpaca-jobs submit`` following a run on a terminal: log text above, the bar below.

    The worker's plain progress lines are left out (the bar shows them); everything else in
    the log is printed as it comes. Off a terminal ``enabled`` is False and the text passes."""

    def __init__(self, run_dir: Path, stream: IO[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = _isatty(self.stream)
        self._bar = None
        self._partial = ""

    def feed(self, text: str) -> None:
        """New log text (maybe ending mid-line); then the bar as ``progress.json`` says."""
        if not self.enabled:
            self.stream.write(text)
            self.stream.flush()
            return
        text, self._partial = self._partial + text, ""
        lines = text.split("\n")
        self._partial = lines.pop()  # the unfinished last line waits for the rest
        shown = [line for line in lines if not PLAIN_LINE.search(line)]
        if shown:
            self._print("\n".join(shown))
        self._draw(read_snapshot(self.run_dir))

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _draw(self, snap: Snapshot | None) -> None:
        if snap is None or not snap.total:
            return
        if self._bar is None:
            self._bar = _bar(snap.total, 0, self.stream)
        self._bar.set_postfix_str(status_text(snap), refresh=False)
        self._bar.update(snap.step - self._bar.n)

    def close(self) -> None:
        if self._partial and not PLAIN_LINE.search(self._partial):
            self._print(self._partial)
        self._partial = ""
        if self._bar is not None:
            self._draw(read_snapshot(self.run_dir))
            self._bar.close()
            self._bar = None


def cost_so_far(loaded: Any, run_dir: Path) -> Callable[[], float | None]:
    """The run's compute cost as it stands (every process and attempt so far), as the record
    will count it."""
    from alpaca_jobs.ops.prices import gpu_price
    from alpaca_jobs.ops.record import cost_fields
    from alpaca_jobs.ops.usage import read_usage

    spec, res = loaded.spec, loaded.spec.resources
    price = gpu_price(res.gpu_type if res.gpus_per_node else None, spec.cost.gpu_hour_usd).usd_per_gpu_hour

    def cost() -> float | None:
        fields = cost_fields(read_usage(run_dir), res.nodes, res.gpus_per_node, price,
                             spec.cost.cpu_core_hour_usd, None)
        return fields["cost_usd"]

    return cost
