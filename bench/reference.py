"""A plain Hugging Face Trainer run of the same recipe: padded batches, one process.

Not shipped (bench and tests only: ``from bench.reference import trainer_losses`` with the
repository root on sys.path). The yardstick for fidelity (our packed FSDP loop must give the same per-step losses) and for
the throughput benchmark. Same data order as our loop: a sampler that replays our plan's
per-epoch permutation, so each optimizer step sees the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from alpaca_jobs.spec import LoadedSpec
from alpaca_jobs.train.data import Example
from alpaca_jobs.train.packing import pad
from alpaca_jobs.train.plan import epoch_order


class _PlanSampler(torch.utils.data.Sampler):
    """Yields our plan's permutation for epoch 0, 1, 2, ... on successive iterations."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples, self.seed, self.epoch = num_examples, seed, 0

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self):
        order = epoch_order(self.num_examples, self.seed, self.epoch)
        self.epoch += 1
        return iter(order)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


def trainer_losses(loaded: LoadedSpec, model, tok, examples: list[Example], out_dir: Path,
                   max_steps: int | None = None, bf16: bool = False, processes: int = 1,
                   callbacks: Sequence[Any] = (),
                   on_batch: Callable[[dict[str, torch.Tensor]], None] | None = None,
                   training_args: dict[str, Any] | None = None) -> tuple[list[float], float, int]:
    """Train with transformers.Trainer; returns (per-step losses, train seconds, tokens computed).

    For bench/throughput.py: ``processes``, the Trainer's own data-parallel processes (DDP when
    started under torchrun), each accumulating global_batch_size / (micro_batch_size x
    processes) micro-batches per step (accelerate hands each process every processes-th
    micro-batch of the sampler's order, so a step covers the same global batch);
    ``callbacks``, extra TrainerCallbacks; ``on_batch``, called with each collated (padded)
    micro-batch; ``training_args``, extra TrainingArguments.
    """
    import time

    from transformers import Trainer, TrainerCallback

    cfg = loaded.spec.train
    total_steps = cfg.epochs * math.ceil(len(examples) / cfg.global_batch_size)
    accum = cfg.global_batch_size // (cfg.micro_batch_size * processes)
    losses: list[float] = []
    tokens = [0]

    class Capture(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    def collate(batch: list[Example]):
        tokens[0] += len(batch) * max(len(e.input_ids) for e in batch)
        padded = pad(batch, tok.pad_token_id)
        if on_batch is not None:
            on_batch(padded)
        return padded

    args = _arguments(cfg, out_dir, accum, max_steps, bf16, training_args or {})

    class PlanTrainer(Trainer):
        def _get_train_sampler(self, *a, **k):
            return _PlanSampler(len(examples), cfg.seed)

    trainer = PlanTrainer(model=model, args=args, train_dataset=_Examples(examples), data_collator=collate,
                          callbacks=[Capture(), *callbacks])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    expected = total_steps if not max_steps else min(max_steps, total_steps)
    assert len(losses) == expected and all(math.isfinite(x) for x in losses), \
        f"Trainer logged {len(losses)} losses, expected {expected} finite ones"
    return losses, seconds, tokens[0]


def _arguments(cfg: Any, out_dir: Path, accum: int, max_steps: int | None, bf16: bool,
               extra: dict[str, Any]):
    """The recipe's TrainingArguments (the Alpaca hyperparameters of the spec)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accum, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=max_steps or -1, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        optim="adamw_torch", seed=cfg.seed, use_cpu=not torch.cuda.is_available(), report_to=[],
        logging_steps=1, save_strategy="no", remove_unused_columns=False, disable_tqdm=True,
        dataloader_num_workers=0, bf16=bf16, **extra,
    )
