"""The Alpaca SFT loop, run in every worker process (one per GPU, or N gloo processes on CPU).

Launch is the backend's business; this module expects torch.distributed's env:// variables.

Loss normalisation: every optimizer step divides the summed token cross-entropy of all its
rows on all processes by the number of target tokens in the whole step, which the plan knows
on the host. Each row's loss is ``sum * world / N`` because FSDP averages gradients over
processes; the gradient is then exactly d(sum over step)/N, the same as one big padded batch,
however examples are split over processes and micro-steps.

Host syncs: none inside a step. Rows are built ahead on a thread and copied without blocking;
target counts come from the plan; a step's loss and gradient norm are read one step later,
once the next step is queued; the stop flag and the checkpoint clock are agreed every
``AGREE_EVERY`` steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.signals import StopFlag
from alpaca_jobs.ops.usage import UsageMeter
from alpaca_jobs.spec import LoadedSpec
from alpaca_jobs.train import checkpoint
from alpaca_jobs.train.batches import Feeder, Row
from alpaca_jobs.train.fsdp import Dist
from alpaca_jobs.train.plan import PAD_MULTIPLE, StepPlan, padded_length
from alpaca_jobs.train.progress import Progress, cost_so_far

log = logging.getLogger(__name__)
AGREE_EVERY = 5  # steps between the (host-syncing) stop/checkpoint agreements


@dataclass
class LoopState:
    """What a checkpoint carries besides tensors: the data position is ``step``."""

    step: int = 0
    tokens: int = 0  # computed by the model, row padding included
    target_tokens: int = 0
    real_tokens: int = 0  # example tokens, padding excluded (for model FLOPs)
    seq_sq_sum: float = 0.0  # sum of squared example lengths (for attention FLOPs)
    loop_seconds: float = 0.0  # training steps only
    checkpoint_seconds: float = 0.0  # time training was blocked by checkpoints
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
    flop_params: int  # what model FLOPs count: all but the input embedding table
    layers: int
    hidden: int
    details: dict[str, Any]  # attention, compile, micro-steps: how this run trained


@dataclass
class _Pending:
    """A queued step whose loss and grad norm are read after the next one is queued."""

    step: int
    loss: torch.Tensor
    norm: torch.Tensor
    work: Any
    host: dict[str, Any]
    launched: float  # host clock once queued: on CPU, where nothing is queued, also its end


def _optimizer(model: torch.nn.Module, loaded: LoadedSpec, device: torch.device) -> torch.optim.Optimizer:
    cfg = loaded.spec.train
    # As HF Trainer: no weight decay on biases and norm weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if ("bias" in name or "norm" in name) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, **fused)


def _scheduler(optimizer, loaded: LoadedSpec, total_steps: int):
    from transformers import get_scheduler

    warmup = math.ceil(loaded.spec.train.warmup_ratio * total_steps)
    return get_scheduler(loaded.spec.train.lr_scheduler, optimizer, num_warmup_steps=warmup,
                         num_training_steps=total_steps)


def micro_step(model, row: Row, scale: float, d: Dist, impl: str, max_length: int) -> torch.Tensor:
    """Forward and backward of one packed row; returns its loss sum (a device tensor, unread)."""
    from alpaca_jobs.train import attention

    kw = attention.row_kwargs(row.doc_lengths, impl, d.device, max_length)
    s = model(**row.to(d.device), **kw)
    (s * scale).backward()
    return s.detach()


def train_step(model, optimizer, scheduler, rows: list[Row], n_targets: int, d: Dist,
               max_grad_norm: float, impl: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over this process's rows; returns (local loss sum, global grad norm)
    as device tensors, unread."""
    from alpaca_jobs.train.fsdp import clip_grad_norm, set_micro_step

    scale = d.world / max(n_targets, 1)
    loss_sum = torch.zeros((), dtype=torch.float32, device=d.device)
    for j, row in enumerate(rows):
        if len(rows) > 1:
            set_micro_step(model, last=j == len(rows) - 1)
        loss_sum += micro_step(model, row, scale, d, impl, max_length)
    norm = clip_grad_norm(list(model.parameters()), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, norm


def _step_host_stats(plan: StepPlan, step: int, targets: list[int], world: int,
                     multiple: int) -> dict[str, Any]:
    """Token counts of a whole step (all ranks), from the plan: no collective needed."""
    lengths = [plan.lengths[i] for i in plan.step_examples(step)]
    computed = sum(padded_length(sum(plan.lengths[i] for i in row), multiple)
                   for r in range(world) for row in plan.rows(step, r))
    return {"tokens": computed, "real_tokens": sum(lengths), "targets": plan.step_targets(step, targets),
            "seq_sq_sum": float(sum(n * n for n in lengths)), "micro_steps": plan.micro_steps(step)}


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _restore(root, optimizer, scheduler, run_dir: Path, metrics: Path, d: Dist) -> LoopState:
    if d.main:
        checkpoint.remove_partials(run_dir)
    found = checkpoint.latest(run_dir)
    state = LoopState()
    if found is None:
        if d.main and metrics.exists():
            metrics.unlink()  # a run that never checkpointed starts over
    else:
        path, saved = found
        if "scheduler" not in saved:
            raise UserError(f"{path}: a checkpoint of the training loop before 2026-12-04 (accelerate's "
                            "format), which this version cannot resume; start a new --run-id")
        checkpoint.load(path, root, optimizer)
        scheduler.load_state_dict(saved["scheduler"])
        state = LoopState(**saved["loop"])
        if d.main and metrics.exists():
            # Steps after the checkpoint are redone: drop their rows so the log stays one sequence.
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            kept = [r for r in rows if r["step"] <= state.step]
            checkpoint.atomic_write(metrics, "".join(json.dumps(r) + "\n" for r in kept))
        log.info("resumed from %s at step %d", path, state.step)
    dist.barrier()
    return state


def _agree(d: Dist, stop: bool, due: bool) -> tuple[bool, bool]:
    """Collective: (any process told to stop, rank 0's checkpoint clock says save)."""
    t = torch.tensor([float(stop), float(due)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    a, b = t.tolist()
    return a > 0, b > 0


class _Trainer:
    """The step loop's moving parts, so each piece reads on its own."""

    def __init__(self, loaded: LoadedSpec, run_dir: Path, d: Dist, root, optimizer, scheduler,
                 plan: StepPlan, feeder: Feeder, targets: list[int], impl: str,
                 progress: Progress, live: dict[str, Any]) -> None:
        self.cfg, self.run_dir, self.d, self.progress = loaded.spec.train, run_dir, d, progress
        self.root, self.optimizer, self.scheduler = root, optimizer, scheduler
        self.plan, self.feeder, self.targets, self.impl = plan, feeder, targets, impl
        self.metrics = run_dir / "metrics.jsonl"
        self.ckpt = checkpoint.Checkpointer(run_dir, d.rank, d.ckpt_group, self.cfg.keep_checkpoints)
        self.pending: _Pending | None = None
        self.live = live  # the job's partial record fields, which the live metric pushes read
        self.t_prev = time.perf_counter()
        self.trackers = None
        if d.main and self.cfg.trackers:
            from alpaca_jobs.train.trackers import Trackers

            hparams = {k: v for k, v in self.cfg.model_dump().items() if isinstance(v, int | float | str)}
            self.trackers = Trackers(self.cfg.trackers, run_dir, run_dir.name, hparams)

    def run(self, state: LoopState, stop: StopFlag, meter: UsageMeter) -> str:
        start, last_ckpt = state.step, time.monotonic()
        self.publish(state, state.step)
        interval = self.cfg.checkpoint_interval_minutes * 60
        while state.step < self.plan.total_steps:
            if (state.step - start) % AGREE_EVERY == 0:
                clock = state.step > start and time.monotonic() - last_ckpt >= interval
                stop_now, due = _agree(self.d, stop.signum is not None, self.d.main and clock)
                if stop_now:
                    self.checkpoint(state, wait=True)
                    return "interrupted"
            else:
                due = False
            every = self.cfg.checkpoint_every_steps
            if due or (every and state.step > start and state.step % every == 0):
                self.checkpoint(state, wait=False)
                last_ckpt = time.monotonic()
            self.one_step(state)
            self.ckpt.poll()
            meter.tick()
        self.finish_pending(state)
        self.ckpt.wait()
        return "completed"

    def one_step(self, state: LoopState) -> None:
        step = state.step
        host = _step_host_stats(self.plan, step, self.targets, self.d.world, self.feeder.multiple)
        loss, norm = train_step(self.root, self.optimizer, self.scheduler, self.feeder.get(step),
                                host["targets"], self.d, self.cfg.max_grad_norm, self.impl,
                                self.cfg.max_length)
        launched = time.perf_counter()
        host["lr"] = self.scheduler.get_last_lr()[0]
        loss = loss.clone()
        work = dist.all_reduce(loss, async_op=True) if self.d.world > 1 else None
        state.step += 1
        for k in ("tokens", "real_tokens", "seq_sq_sum"):
            setattr(state, k, getattr(state, k) + host[k])
        state.target_tokens += host["targets"]
        self.finish_pending(state)  # the previous step: its numbers are ready by now
        self.pending = _Pending(step + 1, loss, norm, work, host, launched)

    def finish_pending(self, state: LoopState) -> None:
        p, self.pending = self.pending, None
        if p is None:
            return
        if p.work is not None:
            p.work.wait()
        loss_sum, norm = p.loss.item(), float(p.norm)  # host syncs, one step late
        # On a GPU this returns when the step has run; on CPU the step ran before it was queued.
        done = time.perf_counter() if self.d.device.type == "cuda" else p.launched
        seconds, self.t_prev = done - self.t_prev, done
        state.loop_seconds += seconds
        loss = loss_sum / max(p.host["targets"], 1)
        state.losses.append(loss)
        if self.d.main:
            row = {"step": p.step, "lr": p.host["lr"], "loss": loss, "grad_norm": norm,
                   **{k: p.host[k] for k in ("tokens", "real_tokens", "targets", "seq_sq_sum", "micro_steps")},
                   "step_seconds": round(seconds, 6)}
            _append_metrics(self.metrics, row)
            self.progress.step(p.step, loss, seconds, p.host["tokens"])
            self.publish(state, p.step)
            if self.trackers is not None:
                self.trackers.log({"loss": loss, "lr": p.host["lr"], "grad_norm": norm,
                                   "tokens_per_second": p.host["tokens"] / max(seconds, 1e-9)}, p.step)

    def publish(self, state: LoopState, done: int) -> None:
        """The record fields of a run in progress: the live pushes show them while it runs, and
        a run that fails keeps them. The keys never change after the first call (another thread
        reads the dict), and the counters include the step queued after ``done``."""
        self.live.update(
            steps=done, total_steps=self.plan.total_steps, tokens_trained=state.tokens,
            target_tokens_trained=state.target_tokens, train_loop_seconds=round(state.loop_seconds, 3),
            checkpoint_seconds=round(state.checkpoint_seconds, 3),
            first_loss=state.losses[0] if state.losses else None,
            final_loss=state.losses[-1] if state.losses else None)

    def checkpoint(self, state: LoopState, wait: bool) -> None:
        self.finish_pending(state)  # the metrics log must reach the checkpointed step
        before = self.ckpt.blocked_seconds
        trainer_state = {"loop": asdict(state), "scheduler": self.scheduler.state_dict()}
        self.ckpt.save(self.root, self.optimizer, state.step, trainer_state, wait)
        blocked = self.ckpt.blocked_seconds - before
        state.checkpoint_seconds += blocked
        self.t_prev = time.perf_counter()  # checkpoint time is not step time


def _record_sharding(root, d: Dist, run_dir: Path, distributed_type: str, mesh: dict[str, Any]) -> None:
    """Fail closed if the parameters are not sharded as decided; write what this process holds
    and the mesh it is sharded over."""
    from torch.distributed.tensor import DTensor

    from alpaca_jobs.train.fsdp import local_and_global_numel

    if (distributed_type == "FSDP") != all(isinstance(p, DTensor) for p in root.parameters()):
        raise RuntimeError(f"expected {'every' if distributed_type == 'FSDP' else 'no'} parameter "
                           "to be an FSDP2-sharded DTensor")
    local, total = local_and_global_numel(root)
    row = {"rank": d.rank, "world": d.world, "distributed_type": distributed_type, "local_numel": local,
           "global_numel": total, "mesh": mesh if distributed_type == "FSDP" else None}
    (run_dir / "sharding").mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(run_dir / "sharding" / f"rank{d.rank}.json", json.dumps(row))


def _consolidate(root, tok, d: Dist, out: Path, prompt: dict[str, str], max_length: int) -> Path:
    """A plain HF directory (safetensors) on rank 0 that other tools take as it is: the prompt it
    learned is its tokenizer's chat template."""
    import shutil

    from alpaca_jobs.train.card import finish_tokenizer
    from alpaca_jobs.train.loading import consolidated_state_dict

    state_dict = consolidated_state_dict(root, d)
    if d.main:
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        root.lm.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        finish_tokenizer(tok, prompt["preamble_with_input"], prompt["preamble_no_input"], max_length)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    dist.barrier()
    return out


def _prepare(loaded: LoadedSpec, base: Path, d: Dist, progress: Progress):
    """Tokenizer, the sharded model with its base weights, and the tokenized data."""
    from transformers import AutoTokenizer

    from alpaca_jobs.train import attention
    from alpaca_jobs.train.data import build_examples
    from alpaca_jobs.train.fsdp import compile_enabled, needs_fsdp, shard
    from alpaca_jobs.train.loading import load_sharded
    from alpaca_jobs.train.mesh import check_world, mesh_layout

    cfg, layout, res = loaded.spec.train, loaded.layout, loaded.spec.resources
    mesh = mesh_layout(layout.fsdp_config.sharding, res.nodes, res.procs_per_node)
    check_world(mesh, res.nodes, res.procs_per_node, d.rank, d.world)
    progress.phase(f"loading the tokenizer and the model from {base}")
    tok = AutoTokenizer.from_pretrained(base)
    compiled = compile_enabled(layout, d.device)
    impl = attention.choose(layout.attention, d.device, compiled)
    if compiled and impl == "per_sequence":
        # Its Python loop over documents would recompile for every new document count.
        log.warning("layout.compile: not compiling with per_sequence attention (no varlen or flex here)")
        compiled = False

    fsdp = needs_fsdp(layout, d)

    def shard_fn(root):
        attention.install(root.lm, impl)
        if layout.fsdp_config.fsdp_activation_checkpointing:
            # Recompute each decoder layer's activations in backward (transformers' own hook).
            root.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        shard(root, root.decoder_layers(layout.fsdp_config.fsdp_transformer_layer_cls_to_wrap),
              layout, d, compiled, mesh)

    root, num_params, matmul_params = load_sharded(base, tok, d, shard_fn)
    how = ("in one process, unsharded (FSDP would shard nothing)" if not fsdp
           else f"sharded over {d.world} process(es)" if mesh.sharding == "full"
           else f"hybrid: sharded over the {mesh.shard_size} process(es) of each node, "
                f"replicated across {mesh.replicas} nodes")
    progress.phase(f"model ready: {num_params:,} parameters {how} "
                   f"({impl} attention{', compiled' if compiled else ''}); tokenizing {cfg.data}")
    preambles = (cfg.prompt.preamble_with_input, cfg.prompt.preamble_no_input)
    examples, stats = build_examples(cfg.data, tok, cfg.max_length, preambles)
    details = {"attention": impl, "compiled": compiled, "flop_params": matmul_params,
               "distributed_type": "FSDP" if fsdp else "NO", "mesh": mesh.as_dict()}
    return tok, root, num_params, examples, stats, details


def _join(progress: Progress, meter: UsageMeter) -> Dist:
    """Join the process group; every process then bills under rank 0's attempt id."""
    from alpaca_jobs.train.fsdp import init_distributed

    progress.phase("joining the process group")
    d = init_distributed()
    if d.world > 1:
        box = [meter.attempt]
        dist.broadcast_object_list(box, src=0, group=d.ckpt_group)
        meter.adopt(box[0])
    return d


def run(loaded: LoadedSpec, run_dir: Path, stop: StopFlag, meter: UsageMeter,
        live: dict[str, Any] | None = None) -> TrainResult:
    """Train to the end (or until told to stop), checkpointing on the way; ``live`` (the job's
    partial record) is kept current with the steps, tokens and loss so far."""
    from alpaca_jobs.model_dirs import resolve_base_model

    cfg = loaded.spec.train
    progress = Progress(run_dir, enabled=int(os.environ.get("RANK", "0")) == 0,
                        every_seconds=cfg.progress_every_seconds, cost=cost_so_far(loaded, run_dir))
    progress.phase(f"preparing the base model {cfg.base_model}"
                   + (" (building the preset once; later runs reuse it)" if cfg.base_model.startswith("preset:") else ""))
    # Presets are built (once, under a file lock) before torch.distributed starts: with a
    # process group up, transformers' save_pretrained leaves config.json to rank 0 alone.
    base = resolve_base_model(cfg.base_model, cfg.data)
    d = _join(progress, meter)
    torch.manual_seed(cfg.seed)
    tok, root, num_params, examples, stats, details = _prepare(loaded, base, d, progress)
    _record_sharding(root, d, run_dir, details["distributed_type"], details["mesh"])
    plan = StepPlan([len(e.input_ids) for e in examples], cfg.global_batch_size, d.world,
                    cfg.tokens_per_micro_step, cfg.epochs, cfg.seed, cfg.max_steps)
    optimizer = _optimizer(root, loaded, d.device)
    scheduler = _scheduler(optimizer, loaded, plan.total_steps)
    progress.phase(f"{len(examples)} examples, {plan.total_steps} steps; looking for a checkpoint")
    state = _restore(root, optimizer, scheduler, run_dir, run_dir / "metrics.jsonl", d)
    # Padding buys stable shapes for the compiler; without it, it is only wasted work.
    feeder = Feeder(plan, examples, d.rank, tok.pad_token_id, PAD_MULTIPLE if details["compiled"] else 1)
    root.train()
    trainer = _Trainer(loaded, run_dir, d, root, optimizer, scheduler, plan, feeder,
                       [e.num_targets for e in examples], details["attention"], progress,
                       {} if live is None else live)
    progress.phase(f"training from step {state.step} of {plan.total_steps}"
                   + (" (the first steps compile the model)" if details["compiled"] else ""))
    progress.start(state.step, plan.total_steps)
    try:
        status = trainer.run(state, stop, meter)
    finally:
        feeder.close()
        progress.close(phase="training ended")
        if trainer.trackers is not None:
            trainer.trackers.finish()
    model_dir = None
    if status == "completed":
        progress.phase("saving the consolidated model")
        model_dir = _consolidate(root, tok, d, run_dir / "model", cfg.prompt.model_dump(), cfg.max_length)
    progress.phase(f"training {status} at step {state.step}/{plan.total_steps}")
    config = root.lm.config
    details["micro_steps_per_step"] = plan.micro_steps(0)
    return TrainResult(status, state, plan.total_steps, model_dir, stats.as_dict(), str(d.device),
                       num_params, details["flop_params"], config.num_hidden_layers, config.hidden_size,
                       details)
