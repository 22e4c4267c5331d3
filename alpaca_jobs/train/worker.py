"""Entry point of every training worker process (what a backend starts N times).

Under submitit (local and Slurm) each task exports torch.distributed's env from submitit's
job environment; under torchrun (Kubernetes) the env is already set. Rank 0 writes the run
record once all processes have recorded their usage.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError


def _export_dist_env() -> None:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return  # torchrun or the caller set it
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _setup_logging() -> None:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    for noisy in ("accelerate", "transformers", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def train_job(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Run one training attempt. Returns the run record on rank 0, None elsewhere."""
    from alpaca_jobs.spec import LoadedSpec
    from alpaca_jobs.train.usage import UsageMeter

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # Before torch is imported: one process per core on CPU (oversubscription halves speed).
    os.environ.setdefault("OMP_NUM_THREADS", str(payload["spec"]["resources"]["cpus_per_process"]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _export_dist_env()
    _setup_logging()
    run_dir = Path(payload["run_dir"])
    meter = UsageMeter(run_dir)
    loaded = LoadedSpec.from_payload(payload)
    from alpaca_jobs.common.signals import StopFlag
    from alpaca_jobs.train import loop

    stop = StopFlag().install()
    try:
        result = loop.run(loaded, run_dir, stop, meter)
    except UserError as exc:
        _write_failed(payload, loaded, run_dir, str(exc), started)
        raise
    except Exception as exc:
        _write_failed(payload, loaded, run_dir, f"{type(exc).__name__}: {exc}", started)
        raise
    finally:
        stop.restore()
    meter.tick(force=True)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
    record = None
    if int(os.environ.get("RANK", "0")) == 0:
        record = _record(payload, loaded, run_dir, result, started)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if result.status == "interrupted" and stop.signum == signal.SIGUSR2:
        _requeue_on_slurm(loaded.spec.slurm.max_requeues)
    return record


def _requeue_on_slurm(max_requeues: int) -> None:
    """Time-limit warning under Slurm: the checkpoint is written, so requeue the job; the next
    attempt resumes from it. (On SIGTERM we do not: that is scancel, or a preemption that
    Slurm requeues by itself.)"""
    import subprocess

    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or int(os.environ.get("RANK", "0")) != 0:
        return
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    log = logging.getLogger(__name__)
    if restarts >= max_requeues:
        log.warning("not requeueing job %s: already restarted %d times (slurm.max_requeues)", job_id, restarts)
        return
    log.info("requeueing Slurm job %s (restart %d of at most %d)", job_id, restarts + 1, max_requeues)
    subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)


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


def _record(payload, loaded, run_dir: Path, result, started: str) -> dict[str, Any]:
    from alpaca_jobs.ops.records import build_record, publish, read_usage

    res = loaded.spec.resources
    st = result.state
    secs = max(st.loop_seconds, 1e-9)
    mfu, steady = _mfu(result, run_dir, res.world_size)
    extra = {} if steady is None else {"mfu_after_warmup": round(steady, 4)}
    import torch

    if torch.cuda.is_available():
        extra["device_name"] = torch.cuda.get_device_name()
    rec = build_record(
        payload, loaded, result.status, read_usage(run_dir), started,
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
    return publish(rec, run_dir)


def _write_failed(payload, loaded, run_dir: Path, error: str, started: str) -> None:
    """Best effort: a failed run still leaves a record saying why (rank 0 only)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    from alpaca_jobs.ops.records import build_record, publish, read_usage

    try:
        publish(build_record(payload, loaded, "failed", read_usage(run_dir), started, error=error), run_dir)
    except Exception:  # noqa: BLE001 - never mask the original error
        logging.getLogger(__name__).exception("could not write the failed run record")


def main(argv: list[str] | None = None) -> int:
    """``torchrun --nproc-per-node N -m alpaca_jobs.train.worker SPEC RUN_DIR [--set k=v ...]``.

    The route for launchers that are not submitit (Kubernetes pods, a shell on a GPU box).
    """
    import argparse

    from alpaca_jobs.spec import load_spec

    ap = argparse.ArgumentParser(prog="alpaca_jobs.train.worker")
    ap.add_argument("spec", nargs="?")
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--backend", default="torchrun")
    ap.add_argument("--payload", help="a rendered payload (JSON), as the Kubernetes backend mounts it")
    args = ap.parse_args(argv)
    if args.payload:
        import json

        payload = json.loads(Path(args.payload).read_text())
    else:
        if not (args.spec and args.run_dir):
            ap.error("give SPEC RUN_DIR, or --payload FILE")
        try:
            loaded = load_spec(args.spec, args.overrides)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        run_dir = Path(args.run_dir)
        payload = {**loaded.payload(), "run_id": run_dir.name, "backend": args.backend,
                   "run_dir": str(run_dir)}
    try:
        train_job(payload)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
