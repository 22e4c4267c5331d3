"""The train section of a job spec: the recipe's hyperparameters, and the checks that need the
rest of the spec (the batch must divide over the processes) or its layout (the model must fit
in the GPUs' memory). Imports no torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from alpaca_jobs.common.config import Section
from alpaca_jobs.common.template import PromptFormat


class TrainConfig(Section):
    base_model: str = Field(description="HF model directory, or preset:tiny-llama / preset:smollm2-135m")
    model_size: Literal["7b", "13b", "65b"] | None = Field(
        None, description="the base model's LLaMA size (paper table 2), for the GPU memory check "
        "before launch where base_model's config.json is not readable from here (train/memory.py)")
    data: str = Field(description="Alpaca JSON/JSONL, or self-instruct seed JSONL")
    max_length: int = Field(512, ge=16, le=131072)
    global_batch_size: int = Field(128, ge=1)
    micro_batch_size: int = Field(
        4, ge=1, description="examples per micro-batch of the padded recipe (the HF Trainer "
        "reference); our loop packs rows by tokens_per_micro_step instead")
    tokens_per_micro_step: int = Field(
        8192, ge=128, le=1_048_576, description="token budget of one packed row per process: a "
        "step's share is split into more micro-steps only when it exceeds this (8192 fits the 7B "
        "on 80 GB without activation checkpointing)")
    epochs: int = Field(3, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, description="stop early (smoke tests)")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    seed: int = 42
    checkpoint_interval_minutes: float = Field(
        30.0, gt=0, le=10_080, description="wall-clock time between checkpoints (also on a stop signal)")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also every N steps")
    keep_checkpoints: int = Field(2, ge=1)
    progress_every_seconds: float = Field(
        10.0, gt=0, le=86_400, description="rank 0 logs a progress line (step n/N, loss, tokens/s, "
        "ETA, cost so far) this often when its stdout is not a terminal; on one it draws a bar")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="experiment trackers rank 0 logs each step to "
        "(accelerate's: TensorBoard under <run dir>/tensorboard, W&B when installed)")
    prompt: PromptFormat = Field(default_factory=PromptFormat)

    def check_spec(self, spec: Any) -> None:
        if self.tokens_per_micro_step < self.max_length:
            raise ValueError(
                f"train.tokens_per_micro_step ({self.tokens_per_micro_step}) is smaller than "
                f"train.max_length ({self.max_length}): an example that long would not fit "
                f"one packed row; raise it to at least {self.max_length}")
        per_step = self.micro_batch_size * spec.resources.world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"train.micro_batch_size ({self.micro_batch_size}) x processes "
                f"({spec.resources.world_size}) = {per_step}; change micro_batch_size")

    def check_layout(self, spec: Any, layout: Any) -> dict[str, Any]:
        """Refuse a layout whose GPUs cannot hold the model (train/memory.py); CPU jobs pass."""
        from alpaca_jobs.train.memory import check

        line = check(spec, layout)
        return {} if line is None else {"memory_per_gpu": line}

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step, derived so the global batch is the same on any size."""
        return self.global_batch_size // (self.micro_batch_size * world_size)

    def derived(self, spec: Any) -> dict[str, Any]:
        return {"grad_accum_steps": self.grad_accum_steps(spec.resources.world_size)}
