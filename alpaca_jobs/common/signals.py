"""Stop requests: SIGTERM (preemption, `alpaca-jobs cancel`) and SIGUSR2 (time limit).

The handler only sets a flag. The loop reads it every few steps, all processes agree through
one all-reduce (if any process was told, all stop), checkpoint, and exit cleanly.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            log.warning("received %s: will checkpoint and stop at the end of this step",
                        signal.Signals(signum).name)
        self.signum = signum
