"""Following a run on the submitting terminal: its log text above, its progress bar below
(drawn from the run's ``progress.json``, whatever the kind). ``submit`` and ``pipeline`` use it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from alpaca_jobs.common.progress import (
    PLAIN_LINE,
    Snapshot,
    is_terminal,
    progress_bar,
    read_snapshot,
    status_text,
)


class Follower:
    """Log text above, the bar below. The worker's plain progress lines are left out (the bar
    shows them); everything else in the log is printed as it comes. Off a terminal ``enabled``
    is False and the text passes."""

    def __init__(self, run_dir: Path, stream: IO[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = is_terminal(self.stream)
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
            self._bar = progress_bar(snap.total, 0, self.stream, snap.label or "progress")
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
