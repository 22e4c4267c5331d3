"""Packed rows, built on the host ahead of time so the accelerator never waits for Python.

A row concatenates the examples of one micro-step; ``position_ids`` restart at 0 for each and,
when the layers are compiled, the row is padded to a multiple of 128 (a last "document" of pad
tokens that carries no loss) so that few distinct shapes reach the compiler.
Everything the step needs to know about a row (document lengths, target positions and ids,
token counts) is computed here from Python lists: the training step never asks the device.
The next step's rows are built on a background thread and copied from pinned memory with
non-blocking transfers.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from alpaca_jobs.train.data import IGNORE_INDEX, Example
from alpaca_jobs.train.loss import target_positions
from alpaca_jobs.train.plan import PAD_MULTIPLE, StepPlan, padded_length


@dataclass
class Row:
    input_ids: torch.Tensor  # (1, L)
    position_ids: torch.Tensor  # (1, L)
    target_pos: torch.Tensor  # (T,) positions whose next token is a target
    target_ids: torch.Tensor  # (T,) those next tokens
    doc_lengths: list[int]  # example lengths, then the padding
    real_tokens: int

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device: torch.device) -> dict[str, torch.Tensor]:
        tensors = ("input_ids", "position_ids", "target_pos", "target_ids")
        return {k: getattr(self, k).to(device, non_blocking=True) for k in tensors}


def concat(examples: Sequence[Example]) -> tuple[list[int], list[int], list[int]]:
    """Ids, positions restarting at 0 per example, and labels of examples laid end to end."""
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []
    for ex in examples:
        ids += ex.input_ids
        pos += range(len(ex.input_ids))
        # An example's first token is never a target: after the shift it would be predicted
        # from the previous example's last token.
        labels += [IGNORE_INDEX] + ex.labels[1:]
    return ids, pos, labels


def build_row(examples: Sequence[Example], pad_id: int, pin: bool = False,
              multiple: int = PAD_MULTIPLE) -> Row:
    ids, pos, labels = concat(examples)
    real = len(ids)
    width = padded_length(real, multiple)
    pad = width - real
    ids += [pad_id] * pad
    pos += range(pad)
    labels += [IGNORE_INDEX] * pad
    target_pos, target_ids = target_positions(labels)
    lengths = [len(ex.input_ids) for ex in examples] + ([pad] if pad else [])

    def t(values: list[int], rows: bool) -> torch.Tensor:
        out = torch.tensor([values] if rows else values, dtype=torch.long)
        return out.pin_memory() if pin else out

    return Row(t(ids, True), t(pos, True), t(target_pos, False), t(target_ids, False), lengths, real)


class Feeder:
    """This rank's rows for step s, with step s+1's being built meanwhile on a thread."""

    def __init__(self, plan: StepPlan, examples: Sequence[Example], rank: int, pad_id: int,
                 multiple: int = PAD_MULTIPLE) -> None:
        self.plan, self.examples, self.rank, self.pad_id = plan, examples, rank, pad_id
        self.multiple = multiple
        self.pin = torch.cuda.is_available()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rows")
        self._ahead: tuple[int, Future] | None = None

    def _build(self, step: int) -> list[Row]:
        rows = self.plan.rows(step, self.rank)
        return [build_row([self.examples[i] for i in row], self.pad_id, self.pin, self.multiple)
                for row in rows]

    def get(self, step: int) -> list[Row]:
        if self._ahead is not None and self._ahead[0] == step:
            rows = self._ahead[1].result()
        else:
            rows = self._build(step)
        nxt = step + 1
        self._ahead = (nxt, self._pool.submit(self._build, nxt)) if nxt < self.plan.total_steps else None
        return rows

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
