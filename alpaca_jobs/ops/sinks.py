"""Where finished run records go besides ``run.json``: the ledger and the metrics sinks.

``records.publish`` calls ``publish`` at the end of every run of every job on every backend.
Each sink is best effort: one that fails logs why and leaves the others to run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def publish(record: dict[str, Any], run_dir: Path) -> None:
    """Record ``record`` in the ledger and the metrics sinks configured by the environment."""
    from alpaca_jobs.ops import ledger

    path = ledger.ledger_path(run_dir=Path(run_dir))
    try:
        ledger.record_run(record, path)
    except Exception as exc:  # noqa: BLE001 - the run's own run.json is already written
        log.warning("could not record %s in the ledger %s: %s", record.get("run_id"), path, exc)
    try:
        from alpaca_jobs.ops import metrics

        metrics.publish(record)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not publish the metrics of %s: %s", record.get("run_id"), exc)
