"""Where finished run records go besides ``run.json``: the ledger and the metrics sinks.

Placeholder until the ops work (issue #7) lands: publishing is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def publish(record: dict[str, Any], run_dir: Path) -> None:
    """Record ``record`` in the ledger and metrics sinks configured by the environment."""
