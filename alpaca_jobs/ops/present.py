"""The run report printed after a run: cost first, then the rows the run's kind adds."""

from __future__ import annotations

from typing import Any

from alpaca_jobs.common import kinds
from alpaca_jobs.ops.record import RunRecord


def format_report(rec: RunRecord) -> str:
    """Cost first, then what the run's kind reports (its ``report_rows``), then any error."""
    target = rec.target_usd
    verdict = "n/a (no target set)" if target is None else (
        f"${target:.2f} -> {'MET' if rec.target_met else 'MISSED'}"
    )
    rows = [
        ("run", f"{rec.run_id}  ({rec.job} on {rec.backend}, {rec.status})"),
        ("hardware", f"{rec.nodes} node(s) x {rec.gpus_per_node} GPU ({rec.gpu_type or '-'}), "
                     f"{rec.processes} processes, device {rec.device}"),
        ("wall time", f"{rec.wall_seconds:.1f} s over {rec.attempts} attempt(s) (job time, not queue time)"),
        ("GPU-hours", f"{rec.gpu_hours:.4f}  ({rec.wall_seconds:.1f} s x {rec.gpus} GPUs)"),
        ("CPU-hours", f"{rec.cpu_hours:.4f}  (measured CPU time of all processes)"),
        ("price", f"${rec.price_per_gpu_hour_usd:.2f}/GPU-h  [{rec.price_source}]"),
        ("cost", f"${rec.cost_usd:.4f}"),
        ("target", verdict),
    ]
    if rec.api:
        a = rec.api
        rows.append(("API spend", f"${a['cost_usd']:.4f} on {a['requests']} requests ({a['retries']} retries), "
                                  f"{a['input_tokens']} in + {a['output_tokens']} out tokens "
                                  f"at ${a['input_usd_per_mtok']}/${a['output_usd_per_mtok']} per 1M "
                                  f"[{a['price_source']}]"))
    kind = kinds.find(rec.job)
    if kind is not None and kind.report_rows is not None:
        rows += kind.report_rows(rec)
    else:
        rows += [(k, str(v)) for k, v in rec.results.items() if not isinstance(v, dict | list)]
    if rec.scheduler:
        sch = rec.scheduler
        rows.append(("scheduler", f"{sch['gpu_hours']:.4f} GPU-h by {sch['source']} "
                                  f"({sch['elapsed_seconds']} s x {sch['gpus']} GPUs, {sch['attempts']} attempt(s)); "
                                  f"{'agrees' if sch['agree'] else 'DISAGREES'} with the job's own "
                                  f"(diff {sch['difference_seconds']:+.0f} s, tolerance {sch['tolerance_seconds']:.0f} s)"))
    if rec.error:
        rows.append(("error", rec.error))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def train_rows(rec: RunRecord) -> list[tuple[str, str]]:
    return [
        ("steps", f"{rec.steps}/{rec.total_steps}"),
        ("loss", f"{fmt_float(rec.first_loss)} -> {fmt_float(rec.final_loss)}"),
        ("tokens", f"{rec.tokens_trained} computed, {rec.target_tokens_trained} target"),
        ("throughput", f"{rec.tokens_per_second:.1f} tokens/s over {rec.train_loop_seconds:.1f} s "
                       "of training loop"),
        ("MFU", "n/a (CPU)" if rec.mfu is None else f"{rec.mfu * 100:.1f}%"),
        ("data", _data_line(rec.data)),
        ("model", rec.model_dir or "-"),
    ]


def generate_rows(rec: RunRecord) -> list[tuple[str, str]]:
    res = rec.results
    if not res:
        return []
    return [("stopped", res.get("stop_reason", "-")),
            ("kept", f"{res.get('kept', 0)} tasks of {res.get('candidates', 0)} parsed, from "
                     f"{res.get('responses', 0)} replies ({res.get('unparseable_responses', 0)} unparseable, "
                     f"{res.get('replayed_responses', 0)} replayed from the log)"),
            ("rejected", rejected_line(res)),
            ("data", res.get("data_file", "-"))]


def rejected_line(results: dict[str, Any]) -> str:
    """A generation's rejections, most frequent reason first: "47 (malformed_block 24, ...)"."""
    reasons = sorted((results.get("rejected") or {}).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{k} {v}" for k, v in reasons)
    return f"{results.get('rejected_total', 0)}" + (f" ({detail})" if detail else "")


def fmt_float(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _data_line(d: dict[str, Any]) -> str:
    if not d:
        return "-"
    return (
        f"{d.get('kept', 0)} examples kept of {d.get('records_read', 0)}; skipped "
        f"{d.get('skipped_empty_output', 0)} empty, {d.get('skipped_duplicate', 0)} duplicate, "
        f"{d.get('skipped_no_target_tokens', 0)} prompt-only; truncated {d.get('truncated', 0)}"
    )


# One line per stage in a pipeline's summary (Kind.summary).
def data_line(rec: RunRecord) -> tuple[str, str] | None:
    gen = rec.results
    if not gen:
        return None
    return "data", f"{gen.get('kept', 0)} tasks kept, rejected {rejected_line(gen)} -> {gen.get('data_file', '-')}"


def training_line(tr: RunRecord) -> tuple[str, str] | None:
    target = tr.target_usd
    return "training", (f"loss {fmt_float(tr.first_loss)} -> {fmt_float(tr.final_loss)} over "
                        f"{tr.steps} steps; cost ${tr.cost_usd:.4f}"
                        + (f" vs target ${target:.2f} ({'MET' if tr.target_met else 'MISSED'})"
                           if target else "") + f"; model {tr.model_dir or '-'}")


def evaluation_line(rec: RunRecord) -> tuple[str, str] | None:
    ev = rec.results
    return ("evaluation", eval_line(ev)) if ev else None


def eval_line(ev: dict[str, Any]) -> str:
    a, b = ev.get("system_a", "A"), ev.get("system_b", "B")
    counts = (f"wins/ties/losses {ev.get('wins', 0)}/{ev.get('ties', 0)}/{ev.get('losses', 0)}, "
              f"{ev.get('invalid', 0)} unreadable verdicts, {ev.get('items', 0)} items")
    if ev.get("win_rate") is None:
        return f"{a} vs {b}: no readable judgments ({counts})"
    ci = ev.get("ci95") or []
    ci_text = f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if len(ci) == 2 and None not in ci else ""
    return f"win rate of {a} over {b}: {ev['win_rate']:.2f}{ci_text}; {counts}"
