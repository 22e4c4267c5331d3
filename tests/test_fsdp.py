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


@pytest.mark.parametrize(("requested", "nodes", "per_node", "shape"), [
    ("auto", 1, 8, (8,)),  # one node: full shard
    ("auto", 2, 8, (2, 8)),  # more: hybrid, (replicate, shard)
    ("hybrid", 1, 8, (8,)),  # hybrid on one node is full shard
    ("full", 4, 8, (32,)),
    ("auto", 2, 1, (2, 1)),  # one process per node: replicas only
])
def test_mesh_layout(requested, nodes, per_node, shape):
    from alpaca_jobs.train.mesh import mesh_layout

    mesh = mesh_layout(requested, nodes, per_node)
    assert mesh.shape == shape
    assert mesh.dim_names == (("replicate", "shard") if len(shape) == 2 else ("shard",))
    assert mesh.shard_size == shape[-1] and mesh.replicas * mesh.shard_size == nodes * per_node


def test_world_that_is_not_the_spec_fails_closed():
    from alpaca_jobs.common.errors import UserError
    from alpaca_jobs.train.mesh import check_world, mesh_layout

    hybrid = mesh_layout("auto", 2, 2)
    check_world(hybrid, 2, 2, rank=3, world=4, env={"LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"})
    with pytest.raises(UserError, match=r"2 node\(s\) x 2 process\(es\) = 4, but 3 joined"):
        check_world(hybrid, 2, 2, rank=0, world=3, env={})
    with pytest.raises(UserError, match=r"started 4 on this node \(LOCAL_WORLD_SIZE\)"):
        check_world(hybrid, 2, 2, rank=0, world=4, env={"LOCAL_WORLD_SIZE": "4"})
    with pytest.raises(UserError, match=r"rank 1 is on node 1, but hybrid sharding needs ranks numbered"):
        check_world(hybrid, 2, 2, rank=1, world=4, env={"GROUP_RANK": "1"})
    check_world(mesh_layout("full", 2, 2), 2, 2, rank=1, world=4, env={"LOCAL_WORLD_SIZE": "4"})
