"""FSDP2 (``fully_shard``) set up directly, on GPUs (NCCL) and on CPU (gloo).

Why not through accelerate: accelerate never promotes a multi-process CPU run to FSDP, and it
applies mixed precision twice (autocast around the forward plus FSDP's policy, which also
reduces gradients in bf16). Here the policy is explicit: bf16 parameters in compute, fp32
master weights and fp32 gradient reduction, no autocast. Each decoder layer is compiled in
place before it is sharded (state-dict names do not change), then sharded as one unit.

One process at one precision is left unwrapped (``needs_fsdp``): FSDP2 there shards nothing
and casts nothing, yet every parameter becomes a DTensor and every layer copies its weights in
and its gradients out each step (measured on CPU: 8-15% of a step of the bench's model).
Everything downstream (gradient clipping, checkpoints, consolidation) takes either form.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from alpaca_jobs.spec import Layout
from alpaca_jobs.train.mesh import MeshLayout


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device
    ckpt_group: object  # a gloo group for background checkpoint writes (never the training one)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group from torch.distributed's env:// variables (one process if unset)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        kw = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kw)
    ckpt_group = dist.new_group(backend="gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device, ckpt_group)


def compile_enabled(layout: Layout, device: torch.device) -> bool:
    return device.type == "cuda" if layout.compile == "auto" else bool(layout.compile)


def mixed_precision(layout: Layout, device: torch.device) -> bool:
    """bf16 compute over fp32 master weights: on GPUs only (CPU runs stay fp32)."""
    return layout.mixed_precision == "bf16" and device.type == "cuda"


def needs_fsdp(layout: Layout, d: Dist) -> bool:
    """FSDP2 has work to do: shards to split over processes, or a bf16 compute copy to keep."""
    return d.world > 1 or mixed_precision(layout, d.device)


def device_mesh(d: Dist, mesh: MeshLayout | None = None):
    """The FSDP2 device mesh: 1-D over every rank (full shard), or 2-D (replicate across
    nodes, shard within one) for HSDP, where ``fully_shard`` reduce-scatters within a node
    and all-reduces each shard across nodes."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = mesh or MeshLayout("full", (d.world,), ("shard",))
    return init_device_mesh(d.device.type, mesh.shape, mesh_dim_names=mesh.dim_names)


def shard(model: torch.nn.Module, layers: list[torch.nn.Module], layout: Layout, d: Dist,
          compiled: bool, mesh: MeshLayout | None = None) -> None:
    """Compile (optionally) and shard each decoder layer, then the root (embeddings, norm, head),
    over ``mesh`` (default: full shard over every rank); only compile where ``needs_fsdp`` says
    FSDP2 has nothing to do."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    for layer in layers:
        if compiled:
            layer.compile()  # in place: same module, same parameter names
    if not needs_fsdp(layout, d):
        return
    mesh = device_mesh(d, mesh)
    mp = MixedPrecisionPolicy()
    if mixed_precision(layout, d.device):
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    reshard = layout.fsdp_config.fsdp_reshard_after_forward
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)


def set_micro_step(model, last: bool) -> None:
    """Accumulating: no gradient reduce-scatter and no reshard until the step's last micro-step
    (an unwrapped model just accumulates its gradients)."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
        model.set_reshard_after_backward(last)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global gradient norm (a device tensor: read it later, no host sync), clipped if > 0."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def local_and_global_numel(model: torch.nn.Module) -> tuple[int, int]:
    """Elements this process holds vs the model's total: FSDP2 params are sharded DTensors."""
    from torch.distributed.tensor import DTensor

    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local, total
