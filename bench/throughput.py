"""Training throughput of our loop (packed, FSDP2) against a plain HF Trainer (padded, one
process) on the same data, model, batch sizes and steps, measured in the same run.

    python bench/throughput.py                       # CPU: tiny preset, ours on 2 gloo processes
    python bench/throughput.py --size 1b --steps 20  # GPU: a ~1B random Llama, bf16, MFU reported

The headline is *target* tokens per second (tokens that carry loss), the work both runs
must do; computed tokens/s counts padding for the Trainer and not for packing. On CPU both
sides get the same cores (ours: 2 processes x 1 thread; Trainer: 1 process x 2 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # a bigger random Llama for GPUs, where the tiny one measures only overheads
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
               num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048),
}


def _overrides(args, base: str, runs: Path, gpu: bool) -> list[str]:
    sets = [f"runs_dir={runs}", f"train.base_model={base}", f"train.max_steps={args.steps}",
            f"train.checkpoint_every_steps={args.steps + 1}", "train.data=seeds/seed_tasks.jsonl",
            "train.epochs=1000",  # --steps decides the length (as max_steps does for the Trainer)
            f"train.global_batch_size={args.global_batch}", f"train.micro_batch_size={args.micro_batch}",
            "train.learning_rate=1.0e-4", f"train.packing={'false' if args.no_packing else 'true'}"]
    if gpu:
        sets += [f"resources.gpus_per_node={args.processes}", "resources.gpu_type=bench-gpu",
                 "cost.gpu_hour_usd=0", "resources.cpus_per_process=4"]
    return sets


def ours(spec: str, sets: list[str], run_dir: Path, processes: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
           "-m", "alpaca_jobs.train.worker", spec, str(run_dir), "--backend", "bench"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((run_dir / "run.json").read_text())


def theirs(spec: str, sets: list[str], base: str, out: Path, steps: int) -> tuple[float, int, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alpaca_jobs.spec import load_spec
    from alpaca_jobs.train.data import build_examples
    from alpaca_jobs.train.models import add_pad_token
    from alpaca_jobs.train.reference import trainer_losses

    loaded = load_spec(spec, sets)
    cfg = loaded.spec.train
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    add_pad_token(tok, model)
    examples, _ = build_examples(ROOT / cfg.data, tok, cfg.max_length,
                                 (cfg.prompt.preamble_with_input, cfg.prompt.preamble_no_input))
    bf16 = torch.cuda.is_available() and loaded.layout.mixed_precision == "bf16"
    _, seconds, computed = trainer_losses(loaded, model, tok, examples, out, max_steps=steps, bf16=bf16)
    from alpaca_jobs.train.plan import StepPlan

    plan = StepPlan(len(examples), cfg.global_batch_size, cfg.micro_batch_size, 1, cfg.epochs, cfg.seed)
    targets = sum(examples[i].num_targets for s in range(steps) for i in plan.step_examples(s))
    return seconds, computed, targets


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["tiny", *SIZES], default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--no-packing", action="store_true", help="ours padded too: isolates packing's cost")
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    args.processes = args.processes or (torch.cuda.device_count() if gpu else 2)
    spec = "jobs/train.yaml" if gpu else "jobs/train-local.yaml"
    from alpaca_jobs.train.models import build_tiny_llama, resolve_base_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.size == "tiny":
            base = str(resolve_base_model("preset:tiny-llama", str(ROOT / "seeds/seed_tasks.jsonl")))
        else:
            base = str(tmp / f"llama-{args.size}")
            build_tiny_llama(Path(base), [str(ROOT / "seeds/seed_tasks.jsonl")], **SIZES[args.size])
        sets = _overrides(args, base, tmp / "runs", gpu)
        rec = ours(spec, sets, tmp / "runs" / "bench", args.processes)
        t_secs, t_computed, t_targets = theirs(spec, sets, base, tmp / "trainer", args.steps)
    o_tps = rec["target_tokens_trained"] / rec["train_loop_seconds"]
    t_tps = t_targets / t_secs
    dev = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {dev}; model: {args.size}; {args.steps} steps of {args.global_batch} examples")
    mode = "padded" if args.no_packing else "packed"
    print(f"ours     ({args.processes} proc, {mode}, FSDP2): {o_tps:10.1f} target tok/s  "
          f"{rec['tokens_per_second']:10.1f} computed tok/s  {rec['train_loop_seconds']:.2f} s")
    print(f"Trainer  (1 proc, padded):            {t_tps:10.1f} target tok/s  "
          f"{t_computed / t_secs:10.1f} computed tok/s  {t_secs:.2f} s")
    print(f"ratio ours / Trainer (target tokens/s): {o_tps / t_tps:.2f}x")
    if rec.get("mfu") is not None:
        print(f"MFU (ours): {rec['mfu'] * 100:.1f}% of bf16 peak")


if __name__ == "__main__":
    main()
