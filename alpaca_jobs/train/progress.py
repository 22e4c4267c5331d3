"""Training made visible while it runs: what it is doing, and a progress bar on rank 0.

Rank 0 keeps ``progress.json`` in the run directory current (phase, step n/N, loss, tokens/s,
ETA, cost so far; the format is ``common.progress``'s) and shows the same figures on its own
stdout: a tqdm bar when stdout is a terminal (torchrun in a shell), else one plain log line
every ``train.progress_every_seconds`` (batch logs: no carriage returns in the file).
``alpaca-jobs submit`` follows a run through its log file, never a terminal, so its follower
(``cli/follow.py``) draws the bar on the submitting terminal from ``progress.json``.

tqdm (already installed with transformers) draws the bar; rich would need a new dependency.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from alpaca_jobs.common.progress import (
    Snapshot,
    is_terminal,
    plain_line,
    progress_bar,
    status_text,
    write_snapshot,
)

log = logging.getLogger(__name__)
WRITE_EVERY = 0.5  # seconds between progress.json updates (a step can take milliseconds)


class Progress:
    """Rank 0's reporter. ``phase(text)`` says what is happening before the first step;
    ``step(...)`` after each one; ``close()`` at the end. Other ranks get ``enabled=False``."""

    def __init__(self, run_dir: Path, enabled: bool = True, every_seconds: float = 10.0,
                 stream: IO[str] | None = None, cost: Callable[[], float | None] | None = None) -> None:
        self.run_dir, self.enabled, self.every = run_dir, enabled, every_seconds
        self.stream = stream if stream is not None else sys.stdout
        self.cost = cost or (lambda: None)
        self.tty = enabled and is_terminal(self.stream)
        self.snap = Snapshot("starting", label="train")
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
            self._bar = progress_bar(total, step, self.stream, "train")

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
        if not force and time.time() - self._written < WRITE_EVERY:
            return
        write_snapshot(self.run_dir, self.snap)
        self._written = self.snap.updated


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
