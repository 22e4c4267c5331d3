"""The train kind's body: one training attempt in each of N worker processes.

The job runtime (``alpaca_jobs.runtime``) sets up the process (torch.distributed's env from
submitit's or torchrun's, logging, signals, the usage meter) and writes the run record from
what rank 0 returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_body(job) -> Any:
    """One training attempt in this process (one of N). The runtime writes the record."""
    from alpaca_jobs.job import Outcome
    from alpaca_jobs.train import loop

    result = loop.run(job.loaded, job.run_dir, job.stop, job.meter, job.partial)
    job.meter.tick(force=True)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # every process has recorded its usage
    outcome = Outcome(result.status, _fields(job.loaded, job.run_dir, result)) if job.rank == 0 else None
    if outcome is not None and result.model_dir is not None:
        from alpaca_jobs.train.card import write_card

        write_card(result.model_dir, job.loaded, job.record(outcome.status, **outcome.fields))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return outcome


WARMUP_STEPS = 3  # compile and allocator warm-up: left out of the steady-state MFU


def _model_flops(result, real_tokens: float, seq_sq_sum: float) -> float:
    """PaLM-style model FLOPs (padding is not model work): 6N per token (N without the embedding
    lookup), plus 12*L*d*T per token of a length-T example for attention."""
    return 6 * result.flop_params * real_tokens + 12 * result.layers * result.hidden * seq_sq_sum


def _mfu(result, run_dir: Path, world: int) -> tuple[float | None, float | None]:
    """(MFU over the whole loop, MFU after the warm-up steps) against the GPU's dense bf16 peak."""
    import json

    import torch

    from alpaca_jobs.ops.prices import peak_flops

    peak = peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
    if not peak:
        return None, None
    st = result.state
    whole = _model_flops(result, st.real_tokens, st.seq_sq_sum) / max(st.loop_seconds, 1e-9) / (peak * world)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    late = [r for r in rows if r["step"] > WARMUP_STEPS and "seq_sq_sum" in r]
    steady = None
    if late:
        flops = sum(_model_flops(result, r["real_tokens"], r["seq_sq_sum"]) for r in late)
        steady = flops / max(sum(r["step_seconds"] for r in late), 1e-9) / (peak * world)
    return whole, steady


def _fields(loaded, run_dir: Path, result) -> dict[str, Any]:
    res = loaded.spec.resources
    st = result.state
    secs = max(st.loop_seconds, 1e-9)
    mfu, steady = _mfu(result, run_dir, res.world_size)
    extra = {} if steady is None else {"mfu_after_warmup": round(steady, 4)}
    import torch

    if torch.cuda.is_available():
        extra["device_name"] = torch.cuda.get_device_name()
    return dict(
        steps=st.step, total_steps=result.total_steps,
        tokens_trained=st.tokens, target_tokens_trained=st.target_tokens,
        train_loop_seconds=round(st.loop_seconds, 3), checkpoint_seconds=round(st.checkpoint_seconds, 3),
        tokens_per_second=round(st.tokens / secs, 2),
        mfu=None if mfu is None else round(mfu, 4), device=result.device,
        first_loss=st.losses[0] if st.losses else None,
        final_loss=st.losses[-1] if st.losses else None,
        model_dir=str(result.model_dir) if result.model_dir else None,
        data=result.data_stats,
        results={**result.details, "real_tokens": st.real_tokens, "num_params": result.num_params,
                 "layers": result.layers, "hidden": result.hidden,
                 "target_tokens_per_second": round(st.target_tokens / secs, 2), **extra},
    )
