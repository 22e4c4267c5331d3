"""Which examples go into which micro-batch of which process at which optimizer step.

The plan is a pure function of (number of examples, batch sizes, world size, seed), so the
"data position" of a checkpoint is just the optimizer step: a resumed run sees exactly the
batches an uninterrupted run would have seen. Each epoch is a fresh seeded permutation; the
last global batch of an epoch may be short (no example is dropped).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class StepPlan:
    num_examples: int
    global_batch_size: int
    micro_batch_size: int
    world_size: int
    epochs: int
    seed: int
    max_steps: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.global_batch_size)

    @property
    def total_steps(self) -> int:
        total = self.epochs * self.steps_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def grad_accum_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.num_examples))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def step_examples(self, step: int) -> list[int]:
        """All example indices of optimizer step ``step`` (0-based), across all processes."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[k * self.global_batch_size : (k + 1) * self.global_batch_size]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """This process's micro-batches for ``step``: always grad_accum_steps of them, so every
        process runs the same number of forward/backward passes (FSDP collectives must match);
        the tail of a short last batch leaves some of them empty."""
        mine = self.step_examples(step)[rank :: self.world_size]
        m = self.micro_batch_size
        return [mine[i * m : (i + 1) * m] for i in range(self.grad_accum_steps)]
