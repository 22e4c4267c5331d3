"""Count what a training step asks of the machine: collectives, and host syncs.

A ``TorchDispatchMode`` sees every operator the step dispatches, on any device, so the counts
do not depend on timing: a host sync is an operator that must read a device value on the host
(``.item()``, ``nonzero``, a device-to-host copy...), a collective is a ``c10d`` operator (its
bytes are those of the largest tensor it moves). On CPU nothing is asynchronous, but the same
operators would stall a GPU's queue, which is what the counts stand for.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = frozenset({"aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.equal",
                      "aten.masked_select", "aten.item", "aten.allclose"})


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    return []


class StepProbe(TorchDispatchMode):
    """``with StepProbe() as p: ...`` then ``p.syncs``, ``p.collectives``, ``p.collective_bytes``."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.collectives: Counter[str] = Counter()
        self.collective_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func).rsplit(".", 1)[0]
        out = func(*args, **(kwargs or {}))
        if name in SYNC_OPS or self._device_to_host(name, args, out):
            self.syncs[name] += 1
        elif name.startswith("c10d."):
            self.collectives[name] += 1
            self.collective_bytes += max((t.numel() * t.element_size() for t in _tensors(args)), default=0)
        return out

    @staticmethod
    def _device_to_host(name: str, args, out) -> bool:
        if name not in ("aten._to_copy", "aten.copy_"):
            return False
        src = [t for t in _tensors(args) if t.device.type != "cpu"]
        dst = _tensors(out)
        return bool(src) and bool(dst) and dst[0].device.type == "cpu"
