"""The Alpaca SFT loop, run in every FSDP worker process.

Launch (one process per GPU, or N gloo processes on CPU) is the backend's business; this
module expects torch.distributed's env:// variables (RANK, WORLD_SIZE, MASTER_ADDR, ...).

Loss normalisation: every optimizer step divides the summed token cross-entropy of all its
micro-batches on all processes by the number of target tokens in the whole step (counted up
front with one all-reduce). Each micro-batch's loss is ``sum * world / N``, because FSDP
averages gradients over processes; the gradient is then exactly d(sum over step)/N, the
same as one big padded batch, however examples are split over processes and micro-steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alpaca_jobs.spec import LoadedSpec
from alpaca_jobs.train import checkpoint
from alpaca_jobs.train.data import Example, build_examples
from alpaca_jobs.train.packing import computed_tokens, forward_loss_sum, pack, pad
from alpaca_jobs.train.plan import StepPlan
from alpaca_jobs.train.signals import StopFlag
from alpaca_jobs.train.usage import UsageMeter

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What a checkpoint carries besides tensors: the data position is ``step``."""

    step: int = 0
    tokens: int = 0
    target_tokens: int = 0
    loop_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    status: str  # completed | interrupted
    state: LoopState
    total_steps: int
    model_dir: Path | None
    data_stats: dict[str, Any]
    device: str
    num_params: int
    layers: int
    hidden: int
    real_tokens: int  # example tokens trained, padding excluded (for model FLOPs)
    seq_sq_sum: float  # sum of squared example lengths trained (for attention FLOPs)


def _load_model_and_data(loaded: LoadedSpec):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alpaca_jobs.train.models import add_pad_token, resolve_base_model

    cfg = loaded.spec.train
    base = resolve_base_model(cfg.base_model, cfg.data)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    add_pad_token(tok, model)
    preambles = (cfg.prompt.preamble_with_input, cfg.prompt.preamble_no_input)
    examples, stats = build_examples(cfg.data, tok, cfg.max_length, preambles)
    return tok, model, examples, stats


def _optimizer(model: torch.nn.Module, loaded: LoadedSpec) -> torch.optim.Optimizer:
    cfg = loaded.spec.train
    # As HF Trainer: no weight decay on biases and norm weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if ("bias" in name or "norm" in name) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon
    )


def _scheduler(optimizer, loaded: LoadedSpec, total_steps: int):
    from transformers import get_scheduler

    warmup = math.ceil(loaded.spec.train.warmup_ratio * total_steps)
    return get_scheduler(
        loaded.spec.train.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )


def _micro_batch(examples: list[Example], packed: bool, pad_id: int, device) -> dict[str, torch.Tensor]:
    batch = pack(examples) if packed else pad(examples, pad_id)
    return {k: v.to(device) for k, v in batch.items()}


def _all_reduce(value: float, device, op=None) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.item()


def train_step(model, optimizer, scheduler, accelerator, batches, examples, cfg, pad_id) -> dict[str, float]:
    """One optimizer step over this process's micro-batches. Returns loss, tokens, grad norm.

    No host sync inside the micro-batch loop (the loss is summed on the device): the GPU
    queue stays full. One all-reduce up front (target count), one at the end (loss, tokens).
    """
    device = accelerator.device
    world = accelerator.num_processes
    mine = [[examples[i] for i in mb] for mb in batches]
    n_targets = _all_reduce(sum(ex.num_targets for mb in mine for ex in mb), device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    for mb in mine:
        if mb:
            batch = _micro_batch(mb, cfg.packing, pad_id, device)
            s = forward_loss_sum(model, batch)
        else:  # short last batch: still run forward/backward so FSDP collectives line up
            batch = {"input_ids": torch.full((1, 2), pad_id, device=device)}
            s = model(**batch, use_cache=False).logits.sum() * 0.0
        accelerator.backward(s * world / max(n_targets, 1.0))
        loss_sum += s.detach().double()
        tokens += computed_tokens(mb, cfg.packing)
    grad_norm = None
    if cfg.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    totals = torch.stack([loss_sum, torch.tensor(float(tokens), dtype=torch.float64, device=device)])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    loss, all_tokens = totals.tolist()
    return {"loss": loss / max(n_targets, 1.0), "tokens": int(all_tokens), "targets": int(n_targets),
            "grad_norm": 0.0 if grad_norm is None else float(grad_norm)}


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def _restore(accelerator, run_dir: Path, metrics: Path) -> LoopState:
    found = checkpoint.latest(run_dir)
    if found is None:
        if accelerator.is_main_process and metrics.exists():
            metrics.unlink()  # a run that never checkpointed starts over
        return LoopState()
    path, saved = found
    accelerator.load_state(str(path))
    state = LoopState(**saved["loop"])
    if accelerator.is_main_process and metrics.exists():
        # Steps after the checkpoint are redone: drop their rows so the log stays one sequence.
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        kept = [r for r in rows if r["step"] <= state.step]
        checkpoint.atomic_write(metrics, "".join(json.dumps(r) + "\n" for r in kept))
    log.info("resumed from %s at step %d", path, state.step)
    return state


def _consolidate(accelerator, model, tok, out: Path, prompt: dict[str, str]) -> Path:
    """Gather the full state dict and write a plain HF directory (safetensors) on rank 0,
    with ``alpaca_prompt.json``: the serve job then prompts it in the format it learned."""
    import shutil

    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "alpaca_prompt.json").write_text(json.dumps(prompt, indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    accelerator.wait_for_everyone()
    return out


def _record_sharding(accelerator, model, run_dir: Path) -> None:
    """Fail closed if accelerate did not shard; write what this process holds, as evidence."""
    from accelerate.utils import DistributedType

    from alpaca_jobs.train.fsdp import local_and_global_numel

    if accelerator.num_processes > 1 and accelerator.distributed_type != DistributedType.FSDP:
        raise RuntimeError(f"expected FSDP, accelerate set up {accelerator.distributed_type}")
    local, total = local_and_global_numel(model)
    row = {"rank": accelerator.process_index, "world": accelerator.num_processes,
           "distributed_type": str(accelerator.distributed_type), "local_numel": local, "global_numel": total}
    (run_dir / "sharding").mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(run_dir / "sharding" / f"rank{accelerator.process_index}.json", json.dumps(row))


def run(loaded: LoadedSpec, run_dir: Path, stop: StopFlag, meter: UsageMeter) -> TrainResult:
    """Train to the end (or until told to stop), checkpointing on the way."""
    from accelerate.utils import set_seed

    from alpaca_jobs.train.fsdp import make_accelerator
    from alpaca_jobs.train.models import decoder_layer_class

    cfg = loaded.spec.train
    set_seed(cfg.seed)
    tok, model, examples, stats = _load_model_and_data(loaded)
    layer_cls = decoder_layer_class(model, loaded.layout.fsdp_config.fsdp_transformer_layer_cls_to_wrap)
    accelerator = make_accelerator(loaded.layout, layer_cls)
    meter.start(accelerator)
    plan = StepPlan(len(examples), cfg.global_batch_size, cfg.micro_batch_size,
                    accelerator.num_processes, cfg.epochs, cfg.seed, cfg.max_steps)
    num_params = sum(p.numel() for p in model.parameters())
    optimizer = _optimizer(model, loaded)
    model, optimizer = accelerator.prepare(model, optimizer)
    _record_sharding(accelerator, model, run_dir)
    # Not prepared: accelerate would step it once per process. Registered so it is checkpointed.
    scheduler = _scheduler(optimizer, loaded, plan.total_steps)
    accelerator.register_for_checkpointing(scheduler)
    metrics = run_dir / "metrics.jsonl"
    state = _restore(accelerator, run_dir, metrics)
    model.train()
    status = "completed"
    while state.step < plan.total_steps:
        if stop.agreed(accelerator.device):
            status = "interrupted"
            break
        t0 = time.perf_counter()
        out = train_step(model, optimizer, scheduler, accelerator,
                         plan.micro_batches(state.step, accelerator.process_index),
                         examples, cfg, tok.pad_token_id)
        state.step += 1
        state.loop_seconds += time.perf_counter() - t0
        state.tokens += out["tokens"]
        state.target_tokens += out["targets"]
        state.losses.append(out["loss"])
        if accelerator.is_main_process:
            _append_metrics(metrics, {"step": state.step, "lr": scheduler.get_last_lr()[0], **out})
            log.info("step %d/%d loss %.4f grad_norm %.3f", state.step, plan.total_steps, out["loss"], out["grad_norm"])
        meter.tick()
        if state.step % cfg.checkpoint_every_steps == 0 and state.step < plan.total_steps:
            checkpoint.save(accelerator, run_dir, state.step, {"loop": state.__dict__}, cfg.keep_checkpoints)
    if status == "interrupted" or state.step < plan.total_steps:
        checkpoint.save(accelerator, run_dir, state.step, {"loop": state.__dict__}, cfg.keep_checkpoints)
        model_dir = None
    else:
        model_dir = _consolidate(accelerator, model, tok, run_dir / "model", cfg.prompt.model_dump())
    cfg_m = accelerator.unwrap_model(model).config
    lengths = [len(examples[i].input_ids) for s in range(state.step) for i in plan.step_examples(s)]
    return TrainResult(status, state, plan.total_steps, model_dir, stats.as_dict(), str(accelerator.device),
                       num_params, cfg_m.num_hidden_layers, cfg_m.hidden_size, sum(lengths),
                       float(sum(n * n for n in lengths)))
