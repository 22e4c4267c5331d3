"""Which examples go into which packed row of which process at which optimizer step.

The plan is a pure function of (example lengths, batch size, world size, token budget, seed),
so the "data position" of a checkpoint is just the optimizer step: a resumed run sees exactly
the rows an uninterrupted run would have seen. Each epoch is a fresh seeded permutation; the
last global batch of an epoch may be short (no example is dropped).

Within a step, work is balanced by tokens, not by example count: FSDP waits for the slowest
rank at every layer, and a strided split of Alpaca-like lengths leaves the slowest rank ~1.5x
the mean. Each rank's share is then packed into as few rows as the token budget allows (one,
for the 7B recipe on 80 GB), so gradient accumulation happens only where the budget forces it:
every extra micro-step costs the weights' all-gathers and a reduce-scatter again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from alpaca_jobs.common.errors import UserError

PAD_MULTIPLE = 128  # compiled layers get rows padded to a multiple of this: few distinct shapes


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of one epoch (the HF Trainer reference replays it too)."""
    order = list(range(num_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def padded_length(tokens: int, multiple: int = PAD_MULTIPLE) -> int:
    return max(multiple, math.ceil(tokens / multiple) * multiple)


def _balance(items: list[int], lengths: Sequence[int], bins: int) -> list[list[int]]:
    """Longest-first greedy: each example to the bin with the fewest tokens so far (ties: the
    lowest bin, then the lowest example index, so the result is deterministic)."""
    out: list[list[int]] = [[] for _ in range(bins)]
    load = [0] * bins
    for i in sorted(items, key=lambda i: (-lengths[i], i)):
        b = min(range(bins), key=lambda b: (load[b], b))
        out[b].append(i)
        load[b] += lengths[i]
    return out


class StepPlan:
    """Rows of every optimizer step. ``lengths[i]`` is example i's token count."""

    def __init__(self, lengths: Sequence[int], global_batch_size: int, world_size: int,
                 tokens_per_micro_step: int, epochs: int, seed: int,
                 max_steps: int | None = None) -> None:
        if not lengths:
            raise UserError("train.data: no examples to train on")
        longest = max(lengths)
        if tokens_per_micro_step < longest:
            raise UserError(
                f"train.tokens_per_micro_step: {tokens_per_micro_step} is smaller than the longest "
                f"example ({longest} tokens); raise it to at least {longest} or lower train.max_length")
        self.lengths = list(lengths)
        self.global_batch_size = global_batch_size
        self.world_size = world_size
        self.budget = tokens_per_micro_step
        self.epochs = epochs
        self.seed = seed
        self.max_steps = max_steps
        self._orders: dict[int, list[int]] = {}
        self._rows: dict[int, list[list[list[int]]]] = {}

    @property
    def num_examples(self) -> int:
        return len(self.lengths)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.global_batch_size)

    @property
    def total_steps(self) -> int:
        total = self.epochs * self.steps_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    def epoch_order(self, epoch: int) -> list[int]:
        """Cached: a 52K-example shuffle costs ~15 ms, which the GPU would otherwise wait for."""
        cached = self._orders  # one read: the row builder's thread uses the plan too
        if epoch not in cached:
            cached = self._orders = {epoch: epoch_order(self.num_examples, self.seed, epoch)}
        return cached[epoch]

    def step_examples(self, step: int) -> list[int]:
        """All example indices of optimizer step ``step`` (0-based), across all processes."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[k * self.global_batch_size : (k + 1) * self.global_batch_size]

    def shares(self, step: int) -> list[list[int]]:
        """Each rank's examples for ``step``, balanced by tokens."""
        return _balance(self.step_examples(step), self.lengths, self.world_size)

    def rows(self, step: int, rank: int) -> list[list[int]]:
        """This rank's packed rows (micro-steps) for ``step``. Every rank gets the same number
        (FSDP's collectives must line up); a rank with too little work gets empty rows."""
        cached = self._rows
        if step not in cached:
            cached = self._rows = {step: self._pack_all(self.shares(step))}
        return cached[step][rank]

    def micro_steps(self, step: int) -> int:
        return len(self.rows(step, 0))

    def _pack_all(self, shares: list[list[int]]) -> list[list[list[int]]]:
        need = max(math.ceil(sum(self.lengths[i] for i in s) / self.budget) for s in shares)
        k = max(1, need)
        while True:
            packed = [_balance(s, self.lengths, k) for s in shares]
            if all(sum(self.lengths[i] for i in row) <= self.budget for rows in packed for row in rows):
                return packed
            k += 1  # the greedy split overflowed a row: one more micro-step

    def step_targets(self, step: int, num_targets: Sequence[int]) -> int:
        """Target tokens of the whole step on all ranks: known on the host, no all-reduce."""
        return sum(num_targets[i] for i in self.step_examples(step))
