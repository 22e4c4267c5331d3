"""Build an accelerate Accelerator that really shards with FSDP2, on GPUs and on CPU (gloo).

accelerate never promotes a multi-process CPU run to FSDP: with an FSDP plugin it either
refuses ("no available devices found") or silently runs N unsynchronised copies. Before the
Accelerator is built we therefore mark a MULTI_CPU state as MULTI_GPU on the CPU device; the
FSDP plugin then shards over the gloo process group. Inert when CUDA is present.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from alpaca_jobs.spec import Layout


def _promote_cpu_state_to_fsdp() -> None:
    state = PartialState(cpu=True)
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.MULTI_GPU
        state.device = torch.device("cpu")


def make_accelerator(layout: Layout, layer_cls: str) -> Accelerator:
    """An Accelerator with an FSDP2 full-shard plugin auto-wrapping ``layer_cls`` blocks."""
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        _promote_cpu_state_to_fsdp()
    fc = layout.fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fc.fsdp_version,
        reshard_after_forward=fc.fsdp_reshard_after_forward,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=[layer_cls],
        state_dict_type=fc.fsdp_state_dict_type,
        activation_checkpointing=fc.fsdp_activation_checkpointing,
        cpu_ram_efficient_loading=False,
    )
    mixed = layout.mixed_precision if on_gpu else "no"
    return Accelerator(cpu=not on_gpu, fsdp_plugin=plugin, mixed_precision=mixed)


def local_and_global_numel(model: torch.nn.Module) -> tuple[int, int]:
    """Elements this process holds vs the model's total: FSDP2 params are sharded DTensors."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local, total
