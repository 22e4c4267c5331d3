"""Building run records, and adding the scheduler's own accounting to them.

Cost accounting counts every attempt of a run (a resumed run pays for the work it redid):
each worker process writes ``usage/<attempt>-rank<r>.json`` as it goes (``ops.usage``), and the
record sums the attempts' wall seconds (the job's own time, not queue time) times the GPUs it
held.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alpaca_jobs.ops.record import RunRecord, Usage, cost_fields, load_record


def build_record(payload: dict[str, Any], loaded: Any, status: str, usage: Usage, started: str,
                 **fields: Any) -> RunRecord:
    """The run record of any job: who ran where, what it held, what that cost (+ ``fields``)."""
    import time

    from alpaca_jobs.common import kinds
    from alpaca_jobs.ops.prices import gpu_price

    spec, res = loaded.spec, loaded.spec.resources
    kind = kinds.find(spec.job)
    target = spec.cost.target_usd if spec.cost.target_usd is not None else (
        kind.default_target_usd if kind is not None else None)
    price = gpu_price(res.gpu_type if res.gpus_per_node else None, spec.cost.gpu_hour_usd)
    api = fields.get("api") or {}
    fields.setdefault("api_cost_usd", float(api.get("cost_usd", 0.0)))
    return RunRecord(
        run_id=payload["run_id"], job=spec.job, backend=payload["backend"], status=status,
        nodes=res.nodes, gpus_per_node=res.gpus_per_node, gpu_type=res.gpu_type,
        processes=res.world_size, price_per_gpu_hour_usd=price.usd_per_gpu_hour,
        price_source=price.source, cpu_core_hour_usd=spec.cost.cpu_core_hour_usd,
        **cost_fields(usage, res.nodes, res.gpus_per_node, price.usd_per_gpu_hour,
                      spec.cost.cpu_core_hour_usd, target),
        started_at=started, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    )


# The scheduler's elapsed time also covers what precedes our first measurement (srun,
# container start, Python and torch imports) and follows the last, per attempt.
AGREEMENT = {"relative": 0.10, "seconds_per_attempt": 30.0}


def add_scheduler_usage(run_dir: Path, usage: dict[str, Any]) -> RunRecord | None:
    """Put the scheduler's GPU-seconds beside the job's own, with whether they agree."""
    rec = load_record(run_dir)
    if rec is None:
        return None
    diff = usage["elapsed_seconds"] - rec.wall_seconds
    tol = AGREEMENT["relative"] * usage["elapsed_seconds"] + AGREEMENT["seconds_per_attempt"] * max(1, usage["attempts"])
    rec.scheduler = {**usage, "own_gpu_seconds": rec.gpu_seconds, "difference_seconds": round(diff, 3),
                     "tolerance_seconds": round(tol, 3), "agree": abs(diff) <= tol and usage["gpus"] == rec.gpus
                     and usage.get("nodes", rec.nodes) in (0, rec.nodes)}  # 0: sacct did not say
    rec.write(run_dir)
    try:  # the ledger's row carries the scheduler's figures too
        from alpaca_jobs.ops import ledger

        ledger.record_run(rec, ledger.ledger_path(run_dir=run_dir))
    except Exception as exc:  # noqa: BLE001 - run.json is what counts
        import logging

        logging.getLogger(__name__).warning("could not update the ledger for %s: %s", run_dir, exc)
    return rec
