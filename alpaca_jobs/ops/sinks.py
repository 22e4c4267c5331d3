"""Where finished run records go: ``run.json`` first, then the ledger and the metrics sinks,
then ``summary.html`` (and ``loss.png`` for a run that trained) beside them.

The job runtime calls ``publish_record`` at the end of every run of every kind on every
backend. Each sink is best effort: one that fails logs why and leaves the others to run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alpaca_jobs.ops.record import RunRecord

log = logging.getLogger(__name__)


def publish(record: RunRecord, run_dir: Path) -> None:
    """Record ``record`` in the ledger and the metrics sinks configured by the environment."""
    from alpaca_jobs.ops import ledger

    path = ledger.ledger_path(run_dir=Path(run_dir))
    try:
        ledger.record_run(record, path)
    except Exception as exc:  # noqa: BLE001 - the run's own run.json is already written
        log.warning("could not record %s in the ledger %s: %s", record.run_id, path, exc)
    try:
        from alpaca_jobs.ops import metrics

        metrics.publish(record)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not publish the metrics of %s: %s", record.run_id, exc)


def publish_record(rec: RunRecord, run_dir: Path) -> RunRecord:
    """Write the record beside the run's outputs; then, best effort, into the ledger and the
    metrics sinks the environment configures (a failing sink never fails the run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rec.write(run_dir)
    try:
        publish(rec, run_dir)
    except Exception:  # noqa: BLE001 - the record on disk is what counts
        log.exception("could not publish the run record to the ledger/metrics")
    try:
        from alpaca_jobs.ops.report import write_run_summary

        write_run_summary(rec, run_dir)  # summary.html, and loss.png for runs that trained
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the run summary of %s: %s", rec.run_id, exc)
    return rec
