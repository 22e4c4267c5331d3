"""Run records: what a run measured about itself, as JSON beside its outputs.

Cost accounting counts every attempt of a run (a resumed run pays for the work it redid):
each worker process writes ``usage/<attempt>-rank<r>.json`` as it goes, and the record sums
the attempts' wall seconds (the job's own time, not queue time) times the GPUs it held.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORD_FILE = "run.json"


@dataclass
class Usage:
    attempts: int
    wall_seconds: float
    cpu_seconds: float


def read_usage(run_dir: Path) -> Usage:
    """Sum over attempts: wall = the slowest process of each attempt; CPU = all processes."""
    per_attempt: dict[str, float] = {}
    cpu = 0.0
    for f in sorted((run_dir / "usage").glob("*.json")):
        try:
            u = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a file being replaced right now; the next read sees it
        per_attempt[u["attempt"]] = max(per_attempt.get(u["attempt"], 0.0), u["wall_seconds"])
        cpu += u["cpu_seconds"]
    return Usage(len(per_attempt), sum(per_attempt.values()), cpu)


@dataclass
class RunRecord:
    run_id: str
    job: str
    backend: str
    status: str  # completed | interrupted | failed
    nodes: int
    gpus_per_node: int
    gpu_type: str | None
    processes: int
    attempts: int
    wall_seconds: float
    gpu_seconds: float
    gpu_hours: float
    cpu_seconds: float
    cpu_hours: float
    price_per_gpu_hour_usd: float
    price_source: str
    cpu_core_hour_usd: float
    cost_usd: float
    target_usd: float | None
    target_met: bool | None
    steps: int = 0
    total_steps: int = 0
    tokens_trained: int = 0
    target_tokens_trained: int = 0
    train_loop_seconds: float = 0.0
    checkpoint_seconds: float = 0.0  # training blocked by checkpoints (billed, not loop time)
    tokens_per_second: float = 0.0
    mfu: float | None = None
    device: str = "cpu"
    first_loss: float | None = None
    final_loss: float | None = None
    model_dir: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    api: dict[str, Any] | None = None  # spend on OpenAI-compatible APIs (generate, evaluate)
    api_cost_usd: float = 0.0  # kept apart from cost_usd, which is compute (GPU/CPU) only
    results: dict[str, Any] = field(default_factory=dict)  # the stage's outcome in numbers
    error: str | None = None
    scheduler: dict[str, Any] | None = None  # the scheduler's own accounting, when it has one
    started_at: str = ""
    finished_at: str = ""

    def write(self, run_dir: Path) -> Path:
        from alpaca_jobs.common.files import atomic_write

        path = run_dir / RECORD_FILE
        atomic_write(path, json.dumps(asdict(self), indent=1) + "\n")
        return path


def build_record(payload: dict[str, Any], loaded: Any, status: str, usage: Usage, started: str,
                 **fields: Any) -> RunRecord:
    """The run record of any job: who ran where, what it held, what that cost (+ ``fields``)."""
    import time

    from alpaca_jobs.ops.prices import gpu_price

    spec, res = loaded.spec, loaded.spec.resources
    price = gpu_price(res.gpu_type if res.gpus_per_node else None, spec.cost.gpu_hour_usd)
    api = fields.get("api") or {}
    fields.setdefault("api_cost_usd", float(api.get("cost_usd", 0.0)))
    return RunRecord(
        run_id=payload["run_id"], job=spec.job, backend=payload["backend"], status=status,
        nodes=res.nodes, gpus_per_node=res.gpus_per_node, gpu_type=res.gpu_type,
        processes=res.world_size, price_per_gpu_hour_usd=price.usd_per_gpu_hour,
        price_source=price.source, cpu_core_hour_usd=spec.cost.cpu_core_hour_usd,
        **cost_fields(usage, res.nodes, res.gpus_per_node, price.usd_per_gpu_hour,
                      spec.cost.cpu_core_hour_usd, spec.cost.target_usd),
        started_at=started, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    )


def publish(rec: RunRecord, run_dir: Path) -> dict[str, Any]:
    """Write the record beside the run's outputs; then, best effort, into the ledger and the
    metrics sinks the environment configures (a failing sink never fails the run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rec.write(run_dir)
    out = asdict(rec)
    try:
        from alpaca_jobs.ops import sinks

        sinks.publish(out, run_dir)
    except Exception:  # noqa: BLE001 - the record on disk is what counts
        import logging

        logging.getLogger(__name__).exception("could not publish the run record to the ledger/metrics")
    return out


def own_usage(started_monotonic: float) -> Usage:
    """One process's usage so far: wall since ``started_monotonic`` and its CPU time."""
    import resource
    import time

    ru = resource.getrusage(resource.RUSAGE_SELF)
    rc = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(1, time.monotonic() - started_monotonic,
                 ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime)


def cost_fields(
    usage: Usage,
    nodes: int,
    gpus_per_node: int,
    gpu_price: float,
    cpu_core_hour_usd: float,
    target_usd: float | None,
) -> dict[str, Any]:
    """GPU-seconds = job wall seconds x GPUs held; cost = GPU-hours x price (+ CPU-hours x price)."""
    gpu_seconds = usage.wall_seconds * nodes * gpus_per_node
    cost = gpu_seconds / 3600 * gpu_price + usage.cpu_seconds / 3600 * cpu_core_hour_usd
    return dict(
        attempts=usage.attempts,
        wall_seconds=round(usage.wall_seconds, 3),
        gpu_seconds=round(gpu_seconds, 3),
        gpu_hours=round(gpu_seconds / 3600, 6),
        cpu_seconds=round(usage.cpu_seconds, 3),
        cpu_hours=round(usage.cpu_seconds / 3600, 6),
        cost_usd=round(cost, 6),
        target_usd=target_usd,
        target_met=None if target_usd is None else cost <= target_usd,
    )


# The scheduler's elapsed time also covers what precedes our first measurement (srun,
# container start, Python and torch imports) and follows the last, per attempt.
AGREEMENT = {"relative": 0.10, "seconds_per_attempt": 30.0}


def add_scheduler_usage(run_dir: Path, usage: dict[str, Any]) -> dict[str, Any] | None:
    """Put the scheduler's GPU-seconds beside the job's own, with whether they agree."""
    rec = load_record(run_dir)
    if rec is None:
        return None
    gpus = rec["nodes"] * rec["gpus_per_node"]
    own_elapsed = rec["wall_seconds"]
    diff = usage["elapsed_seconds"] - own_elapsed
    tol = AGREEMENT["relative"] * usage["elapsed_seconds"] + AGREEMENT["seconds_per_attempt"] * max(1, usage["attempts"])
    usage = {**usage, "own_gpu_seconds": rec["gpu_seconds"], "difference_seconds": round(diff, 3),
             "tolerance_seconds": round(tol, 3), "agree": abs(diff) <= tol and usage["gpus"] == gpus}
    rec["scheduler"] = usage
    from alpaca_jobs.common.files import atomic_write

    atomic_write(run_dir / RECORD_FILE, json.dumps(rec, indent=1) + "\n")
    try:  # the ledger's row carries the scheduler's figures too
        from alpaca_jobs.ops import ledger

        ledger.record_run(rec, ledger.ledger_path(run_dir=run_dir))
    except Exception as exc:  # noqa: BLE001 - run.json is what counts
        import logging

        logging.getLogger(__name__).warning("could not update the ledger for %s: %s", run_dir, exc)
    return rec


def load_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def format_report(rec: dict[str, Any]) -> str:
    """The run report printed after a run: cost first, then what was trained."""
    target = rec.get("target_usd")
    verdict = "n/a (no target set)" if target is None else (
        f"${target:.2f} -> {'MET' if rec['target_met'] else 'MISSED'}"
    )
    gpus = rec["nodes"] * rec["gpus_per_node"]
    rows = [
        ("run", f"{rec['run_id']}  ({rec['job']} on {rec['backend']}, {rec['status']})"),
        ("hardware", f"{rec['nodes']} node(s) x {rec['gpus_per_node']} GPU ({rec['gpu_type'] or '-'}), "
                     f"{rec['processes']} processes, device {rec['device']}"),
        ("wall time", f"{rec['wall_seconds']:.1f} s over {rec['attempts']} attempt(s) (job time, not queue time)"),
        ("GPU-hours", f"{rec['gpu_hours']:.4f}  ({rec['wall_seconds']:.1f} s x {gpus} GPUs)"),
        ("CPU-hours", f"{rec['cpu_hours']:.4f}  (measured CPU time of all processes)"),
        ("price", f"${rec['price_per_gpu_hour_usd']:.2f}/GPU-h  [{rec['price_source']}]"),
        ("cost", f"${rec['cost_usd']:.4f}"),
        ("target", verdict),
    ]
    if rec.get("api"):
        a = rec["api"]
        rows.append(("API spend", f"${a['cost_usd']:.4f} on {a['requests']} requests ({a['retries']} retries), "
                                  f"{a['input_tokens']} in + {a['output_tokens']} out tokens "
                                  f"at ${a['input_usd_per_mtok']}/${a['output_usd_per_mtok']} per 1M "
                                  f"[{a['price_source']}]"))
    if rec["job"] == "train":
        rows += [
            ("steps", f"{rec['steps']}/{rec['total_steps']}"),
            ("loss", f"{_f(rec.get('first_loss'))} -> {_f(rec.get('final_loss'))}"),
            ("tokens", f"{rec['tokens_trained']} computed, {rec['target_tokens_trained']} target"),
            ("throughput", f"{rec['tokens_per_second']:.1f} tokens/s over {rec['train_loop_seconds']:.1f} s of training loop"),
            ("MFU", "n/a (CPU)" if rec.get("mfu") is None else f"{rec['mfu'] * 100:.1f}%"),
            ("data", _data_line(rec.get("data") or {})),
            ("model", rec.get("model_dir") or "-"),
        ]
    res = rec.get("results") or {}
    if rec["job"] == "generate" and res:
        rows += [("stopped", res.get("stop_reason", "-")),
                 ("kept", f"{res.get('kept', 0)} tasks of {res.get('candidates', 0)} parsed, from "
                          f"{res.get('responses', 0)} replies ({res.get('unparseable_responses', 0)} unparseable, "
                          f"{res.get('replayed_responses', 0)} replayed from the log)"),
                 ("rejected", rejected_line(res)),
                 ("data", res.get("data_file", "-"))]
    elif res:
        rows += [(k, str(v)) for k, v in res.items() if not isinstance(v, dict | list)]
    if rec.get("scheduler"):
        sch = rec["scheduler"]
        rows.append(("scheduler", f"{sch['gpu_hours']:.4f} GPU-h by {sch['source']} "
                                  f"({sch['elapsed_seconds']} s x {sch['gpus']} GPUs, {sch['attempts']} attempt(s)); "
                                  f"{'agrees' if sch['agree'] else 'DISAGREES'} with the job's own "
                                  f"(diff {sch['difference_seconds']:+.0f} s, tolerance {sch['tolerance_seconds']:.0f} s)"))
    if rec.get("error"):
        rows.append(("error", rec["error"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def rejected_line(results: dict[str, Any]) -> str:
    """A generation's rejections, most frequent reason first: "47 (malformed_block 24, ...)"."""
    reasons = sorted((results.get("rejected") or {}).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{k} {v}" for k, v in reasons)
    return f"{results.get('rejected_total', 0)}" + (f" ({detail})" if detail else "")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _data_line(d: dict[str, Any]) -> str:
    if not d:
        return "-"
    return (
        f"{d.get('kept', 0)} examples kept of {d.get('records_read', 0)}; skipped "
        f"{d.get('skipped_empty_output', 0)} empty, {d.get('skipped_duplicate', 0)} duplicate, "
        f"{d.get('skipped_no_target_tokens', 0)} prompt-only; truncated {d.get('truncated', 0)}"
    )
