"""The HF Trainer side of bench/throughput.py: one training run, per-step figures to JSON.

    python bench/trainer_side.py SPEC OUT --set k=v ...                     # one process
    python -m torch.distributed.run --standalone --nproc-per-node=2 \\
        bench/trainer_side.py SPEC OUT --set k=v ...                        # the Trainer's DDP

Takes the same spec and overrides as our worker (train.max_steps is the run's length) and
runs ``bench/reference.py``'s ``trainer_losses``: padded micro-batches of
train.micro_batch_size per process, accumulation global / (micro x processes), our plan's
epoch order, attn_implementation="sdpa", fp32 (bf16 autocast where the layout asks for bf16
and a GPU is present). Each process writes OUT.rank<R>.json: per optimizer step the wall
seconds from on_step_begin to on_step_end ("body") and from the previous on_step_end
("period", what our loop's step_seconds measures), with CUDA synchronised first, and the
micro-batches it collated for that step (target tokens = labels[:, 1:] != -100, computed
tokens = padded positions, real tokens and their squares for model FLOPs). Under DDP it
also records that the run really is data parallel: world size, the parallel mode, and that
the first step's gradients were identical on every process before the optimizer stepped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

IGNORE_INDEX = -100


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepRecorder(TrainerCallback):
    """Per-step wall times (callbacks) and per-step token counts (the collator's batches).

    The Trainer prefetches a step's micro-batches (and accelerate one more) before the step
    begins, so batches are assigned to steps by their order: the k-th collated micro-batch of
    this process belongs to step k // accumulation.
    """

    def __init__(self, accumulation: int, check_ddp: bool) -> None:
        self.accumulation, self.check_ddp = accumulation, check_ddp
        self.batches = 0
        self.counts: list[dict[str, float]] = []
        self.times: list[dict[str, float]] = []
        self.grad_checksums: list[float] | None = None
        self._begin = self._last_end = 0.0

    def on_batch(self, batch: dict[str, torch.Tensor]) -> None:
        step = self.batches // self.accumulation
        self.batches += 1
        while len(self.counts) <= step:
            self.counts.append({"targets": 0, "tokens": 0, "real_tokens": 0, "seq_sq_sum": 0.0})
        lengths = batch["attention_mask"].sum(dim=1)
        c = self.counts[step]
        c["targets"] += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        c["tokens"] += batch["input_ids"].numel()
        c["real_tokens"] += int(lengths.sum())
        c["seq_sq_sum"] += float((lengths.double() ** 2).sum())

    def on_train_begin(self, args, state, control, **kw):
        _sync()
        self._last_end = time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        _sync()
        self._begin = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        if self.check_ddp and state.global_step == 0 and model is not None:
            self.grad_checksums = _gathered_grad_checksum(model)

    def on_step_end(self, args, state, control, **kw):
        _sync()
        now = time.perf_counter()
        self.times.append({"body": now - self._begin, "period": now - self._last_end})
        self._last_end = now


def _gathered_grad_checksum(model: torch.nn.Module) -> list[float]:
    """Sum of all gradients on each process: equal everywhere iff gradients were averaged."""
    import torch.distributed as dist

    total = sum(p.grad.double().sum() for p in model.parameters() if p.grad is not None)
    t = torch.as_tensor(total, dtype=torch.float64, device=next(model.parameters()).device).reshape(1)
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [float(x) for x in out]


def run(spec: str, sets: list[str], out: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from alpaca_jobs.spec import load_spec
    from alpaca_jobs.train.data import build_examples
    from alpaca_jobs.train.models import add_pad_token, flop_params
    from bench.reference import trainer_losses

    loaded = load_spec(spec, sets)
    cfg = loaded.spec.train
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    gpu = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(cfg.base_model)
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=torch.float32, attn_implementation="sdpa")
    add_pad_token(tok, model)
    preambles = (cfg.prompt.preamble_with_input, cfg.prompt.preamble_no_input)
    examples, _ = build_examples(cfg.data, tok, cfg.max_length, preambles)
    accumulation = cfg.global_batch_size // (cfg.micro_batch_size * processes)
    rec = StepRecorder(accumulation, check_ddp=processes > 1)
    extra: dict[str, Any] = {}
    if gpu:
        extra["optim"] = "adamw_torch_fused"  # the Trainer's default on CUDA; ours is fused there too
    if processes > 1:
        extra["ddp_find_unused_parameters"] = False  # every parameter is used: skip the graph walk
    seen: dict[str, Any] = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args: TrainingArguments, state, control, **kw):
            seen.update(world_size=args.world_size, parallel_mode=str(args.parallel_mode),
                        device=str(args.device))
            if torch.distributed.is_initialized():
                seen["backend"] = torch.distributed.get_backend()

    bf16 = gpu and loaded.layout.mixed_precision == "bf16"
    trainer_losses(loaded, model, tok, examples, out.parent / f"trainer-out-{rank}",
                   max_steps=cfg.max_steps, bf16=bf16, processes=processes,
                   callbacks=[rec, Inspect()], on_batch=rec.on_batch, training_args=extra)
    steps = [{**t, **c} for t, c in zip(rec.times, rec.counts, strict=False)]
    return {
        "rank": rank, "world": processes, "accumulation": accumulation, "micro_batch": cfg.micro_batch_size,
        "threads": torch.get_num_threads(), "bf16": bf16, "attention": model.config._attn_implementation,
        "num_params": flop_params(model),  # the N of 6N, as the worker counts it
        "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
        "device_name": torch.cuda.get_device_name() if gpu else "cpu",
        "grad_checksums": rec.grad_checksums, **seen, "steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("out", type=Path, help="writes OUT.rank<R>.json")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    result = run(args.spec, args.sets, args.out)
    path = args.out.with_name(f"{args.out.name}.rank{result['rank']}.json")
    path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
