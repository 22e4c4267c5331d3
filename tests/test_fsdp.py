"""When FSDP2 wraps the model (train/fsdp.py: needs_fsdp): processes to shard over, or a bf16
compute copy over fp32 master weights to keep; one process at one precision stays plain."""

from __future__ import annotations

import pytest
import torch

from alpaca_jobs.spec import Layout
from alpaca_jobs.train.fsdp import Dist, needs_fsdp


@pytest.mark.parametrize(("world", "device", "precision", "wrapped"), [
    (1, "cpu", "no", False),
    (1, "cpu", "bf16", False),  # CPU runs stay fp32: nothing to cast
    (2, "cpu", "no", True),
    (1, "cuda", "no", False),
    (1, "cuda", "bf16", True),  # one GPU in bf16: FSDP2's policy holds the fp32 master weights
    (8, "cuda", "bf16", True),
])
def test_needs_fsdp(world, device, precision, wrapped):
    d = Dist(rank=0, world=world, device=torch.device(device), ckpt_group=None)
    assert needs_fsdp(Layout(mixed_precision=precision), d) is wrapped
