"""How the ranks of a run are laid out for FSDP2: full shard or hybrid (HSDP). No torch here:
the memory check before launch (train/memory.py) and the workers (train/fsdp.py) both read it.

- ``full``: every parameter, gradient and optimizer state is split over all ``world`` ranks
  (a 1-D mesh). Least memory per GPU; every layer's all-gather and reduce-scatter spans all
  nodes, so each step moves the model's bytes over the inter-node links.
- ``hybrid``: split over the ``procs_per_node`` ranks of a node, replicated across ``nodes``
  (a 2-D mesh ``(nodes, procs_per_node)`` named ``("replicate", "shard")``). All-gathers and
  reduce-scatters stay inside a node (NVLink); only one gradient all-reduce of each node's
  shard crosses nodes per step. Memory per GPU is that of one node holding the whole model.

Ranks are numbered node by node (torchrun, srun and submitit all do: rank = node x per node +
local rank), so row ``n`` of the mesh is node ``n``; ``check_world`` fails closed where the
launcher says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from alpaca_jobs.common.errors import UserError


@dataclass(frozen=True)
class MeshLayout:
    sharding: str  # "full" | "hybrid"
    shape: tuple[int, ...]  # (world,) or (nodes, procs_per_node)
    dim_names: tuple[str, ...]

    @property
    def shard_size(self) -> int:
        """Ranks that each parameter is split over."""
        return self.shape[-1]

    @property
    def replicas(self) -> int:
        return self.shape[0] if len(self.shape) == 2 else 1

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def resolve_sharding(requested: str, nodes: int) -> str:
    """``auto`` is hybrid across nodes and full within one; hybrid on one node is full."""
    if requested == "auto":
        return "hybrid" if nodes > 1 else "full"
    return "full" if nodes == 1 else requested


def mesh_layout(requested: str, nodes: int, procs_per_node: int) -> MeshLayout:
    sharding = resolve_sharding(requested, nodes)
    if sharding == "hybrid":
        return MeshLayout("hybrid", (nodes, procs_per_node), ("replicate", "shard"))
    return MeshLayout("full", (nodes * procs_per_node,), ("shard",))


def check_world(mesh: MeshLayout, nodes: int, procs_per_node: int, rank: int, world: int,
                env: Mapping[str, str] = os.environ) -> None:
    """Fail closed where the processes that joined are not the spec's nodes x procs_per_node,
    or (hybrid) where a node's ranks are not the mesh row the mesh takes them for."""
    if world != nodes * procs_per_node:
        raise UserError(
            f"resources: the spec asks for {nodes} node(s) x {procs_per_node} process(es) = "
            f"{nodes * procs_per_node}, but {world} joined the process group (WORLD_SIZE); launch "
            "one process per GPU on every node the spec names, or change resources")
    if mesh.sharding != "hybrid":
        return
    local_world = env.get("LOCAL_WORLD_SIZE")
    if local_world is not None and int(local_world) != procs_per_node:
        raise UserError(
            f"layout: hybrid sharding takes {procs_per_node} processes per node "
            f"(resources.processes_per_node), but the launcher started {local_world} on this "
            "node (LOCAL_WORLD_SIZE); hybrid shards within a node, so they must agree")
    node = env.get("GROUP_RANK", env.get("NODE_RANK"))
    if node is not None and int(node) != rank // procs_per_node:
        raise UserError(
            f"layout: rank {rank} is on node {node}, but hybrid sharding needs ranks numbered "
            f"node by node (rank // {procs_per_node} = {rank // procs_per_node}); use a launcher "
            "that does (torchrun, srun) or sharding: full")
