"""The one summary a pipeline prints: what each stage produced and what it cost."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alpaca_jobs.common import kinds
from alpaca_jobs.ops.record import RecordError, RunRecord, load_record
from alpaca_jobs.pipeline.state import Pipeline

log = logging.getLogger(__name__)


def collect(pipeline_dir: Path) -> dict[str, Any]:
    """pipeline.json plus each stage's run record, as one JSON-able summary."""
    pipe = Pipeline.load(pipeline_dir)
    stages = {}
    for name, run in pipe.stages.items():
        rec = _record(Path(run.run_dir))
        stages[name] = {"run_id": run.run_id, "status": run.status, "run_dir": run.run_dir,
                        "gpu_hours": rec.gpu_hours if rec else 0.0, "cpu_hours": rec.cpu_hours if rec else 0.0,
                        "compute_usd": rec.cost_usd if rec else 0.0, "api_usd": rec.api_cost_usd if rec else 0.0,
                        "wall_seconds": rec.wall_seconds if rec else 0.0, "record": rec.to_dict() if rec else None}
    total = {k: round(sum(s[k] for s in stages.values()), 6)
             for k in ("gpu_hours", "cpu_hours", "compute_usd", "api_usd", "wall_seconds")}
    return {"id": pipe.id, "cluster": pipe.cluster, "stages": stages, "total": total, "checks": pipe.checks}


def _record(run_dir: Path) -> RunRecord | None:
    """The stage's record; one that cannot be read counts as none (the summary says why)."""
    try:
        return load_record(run_dir)
    except RecordError as exc:
        log.warning("%s", exc)
        return None


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"Alpaca pipeline {s['id']} ({s['cluster']})", "",
             f"{'stage':<9} {'status':<11} {'job s':>8} {'GPU-h':>8} {'CPU-h':>8} {'compute $':>10} {'API $':>8}  run"]
    for name, st in s["stages"].items():
        lines.append(f"{name:<9} {st['status'][:11]:<11} {st['wall_seconds']:>8.1f} {st['gpu_hours']:>8.4f} "
                     f"{st['cpu_hours']:>8.4f} {st['compute_usd']:>10.4f} {st['api_usd']:>8.4f}  {st['run_id']}")
    t = s["total"]
    lines.append(f"{'total':<9} {'':<11} {t['wall_seconds']:>8.1f} {t['gpu_hours']:>8.4f} "
                 f"{t['cpu_hours']:>8.4f} {t['compute_usd']:>10.4f} {t['api_usd']:>8.4f}")
    lines.append("(job s: each job's own running time, summed over attempts; servers overlap the "
                 "stages they serve)")
    lines.append("")
    for name, st in s["stages"].items():  # each stage's line, as its kind words it
        kind = kinds.find(name)
        rec = RunRecord.from_dict(st["record"]) if st.get("record") else None
        line = kind.summary(rec) if rec is not None and kind is not None and kind.summary else None
        if line:
            lines.append(f"{line[0]:<10} {line[1]}")
    wm = s.get("checks", {}).get("watermark")
    if wm:
        o, h = wm["served_output"], wm["human_text"]
        lines.append(f"watermark  served output z={o['z_score']:.2f} ({'detected' if o['watermarked'] else 'NOT detected'}"
                     f", {o['tokens_scored']} tokens); human text z={h['z_score']:.2f} "
                     f"({'detected' if h['watermarked'] else 'not detected'})")
    return "\n".join(lines)
