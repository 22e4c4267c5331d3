"""Reference batches: right-padded (what the HF Trainer yardstick collates) and the packed row
the loop used before issue 12 (kept for bench/step_anatomy.py's "before" column).

That packed row flattens the examples of a micro-batch into one row whose ``position_ids``
restart at 0 for every example; transformers' SDPA path then builds a dense L x L block mask
from them (``attention_mask=None``, ``use_cache=False``). The training loop now uses
``batches.build_row`` and ``attention.py`` instead, which never build that mask.
"""

from __future__ import annotations

import torch

from alpaca_jobs.train.data import IGNORE_INDEX, Example


def pack(examples: list[Example]) -> dict[str, torch.Tensor]:
    """One row: concatenated ids, per-example positions, labels (first token of each: -100)."""
    from alpaca_jobs.train.batches import concat

    ids, pos, labels = concat(examples)
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
    }


def pad(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch, as the original Alpaca code collates."""
    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(ex.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def forward_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of next-token cross-entropy over target tokens (normalised by the caller)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten().to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def count_targets(examples: list[Example]) -> int:
    return sum(ex.num_targets for ex in examples)


def computed_tokens(examples: list[Example], packed: bool) -> int:
    """Token positions the model computes for one micro-batch (padding included when padded)."""
    if not examples:
        return 0
    if packed:
        return sum(len(ex.input_ids) for ex in examples)
    return len(examples) * max(len(ex.input_ids) for ex in examples)
