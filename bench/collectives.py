"""Collective bytes per optimizer step, full shard vs hybrid (HSDP), counted on gloo processes,
then projected to the LLaMA 7B / 13B / 65B plans on 2 and 4 nodes of 8 A100s.

    python bench/collectives.py                      # worlds 2x2, 2x4, 4x2 (nodes x processes)
    python bench/collectives.py --worlds 2x2 --json  # one JSON object (tests/test_collectives.py)

1. Count. ``nodes x per_node`` gloo processes on this machine, numbered node by node as the
   launchers do, so a "node" is a row of the HSDP mesh. Each trains small random Llamas with
   the job's own pieces: the GPU layout file (jobs/layouts/fsdp2-gpu-bf16.yaml: reshard after
   forward, bf16), ``mesh_layout`` and ``fsdp.shard`` (one FSDP2 unit per decoder layer, then
   the root: embeddings, final norm, head), the loop's ``train_step`` and its loss all-reduce.
   The job keeps fp32 on CPU; here ``fsdp.mixed_precision`` is made to follow the layout so
   the collectives carry the GPU's dtypes (bf16 all-gathers, fp32 gradient reductions). A
   dispatch mode records every collective of the counted steps: op, group, bytes. It lets
   DTensor run first (as torch's CommDebugMode does), so the collectives DTensor issues inside
   its own ops (the gradient-norm reduction) are seen too.
2. Formula. From two models that differ only in depth (2 and 4 layers), bytes per step of
   each (layout, op, mesh dim) = k_layer x decoder-layer parameters + k_root x root parameters:
   all-gathers count their output, reduce-scatters their input (the unit's whole tensor), an
   HSDP all-reduce the rank's shard (1/shard_size of the unit). The formula then predicts a
   third model (other width, depth, vocabulary) on every world; the bench fails if any count
   and prediction differ by more than 3%.
3. Wire bytes per GPU (nccl-tests doc/PERFORMANCE.md, ring algorithm): all-gather and
   reduce-scatter send (g-1)/g of the tensor, all-reduce 2(g-1)/g, for a group of g ranks. A
   ring over g ranks on m > 1 nodes, ordered node by node, crosses nodes on m of its g hops;
   NCCL spreads its rings over the node's NICs (one per GPU on a DGX A100), so each GPU's NIC
   carries m/g of what the GPU sends and NVLink the rest. "Across nodes" below is everything
   sent in collectives whose group spans nodes; "NIC" is the part that leaves the node.
4. Projection: the formula on LLaMA shapes. Bandwidths, per GPU and direction: NVLink 3 on A100
   300 GB/s (600 GB/s both ways, A100 datasheet); InfiniBand HDR 200 Gb/s = 25 GB/s (DGX A100:
   eight ConnectX-6 for compute, one per GPU). Link peaks, so the times are lower bounds at
   those links. Comm time: collectives one at a time, each taking the slower of its NVLink and
   NIC parts. Compute: (6 N + 12 L d T) FLOPs per token (PaLM, as ops/estimate.py; N without the
   input embedding, T = 200 tokens the assumed mean example) x 128 examples x 200 tokens per
   step / (GPUs x MFU x 312 TFLOP/s bf16). MFU is assumed (default 0.40, none measured yet):
   the "hides to MFU" column is the MFU up to which comm fits inside compute.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
LAYOUT_FILE = ROOT / "jobs" / "layouts" / "fsdp2-gpu-bf16.yaml"
WARMUP, STEPS = 1, 2
TOLERANCE = 0.03
# Small collectives (the step's loss, the gradient norm's per-tensor partial norms) do not
# grow with the parameters: counted and listed, left out of the formula.
SMALL_BYTES = 1024
# Counted models: A and B differ only in depth (they give k_layer and k_root); C checks.
COUNTED = {"A": dict(hidden=64, inter=176, layers=2, vocab=512),
           "B": dict(hidden=64, inter=176, layers=4, vocab=512),
           "C": dict(hidden=96, inter=256, layers=3, vocab=768)}
# LLaMA (Touvron et al. 2023, table 2): width, layers, and the paper's parameter count; FFN
# widths from the released configs; vocabulary 32,000 + the pad token Alpaca adds.
PLANS = {"7B": dict(hidden=4096, inter=11008, layers=32, paper=6.7e9),
         "13B": dict(hidden=5120, inter=13824, layers=40, paper=13.0e9),
         "65B": dict(hidden=8192, inter=22016, layers=80, paper=65.2e9)}
VOCAB = 32_001
GPUS_PER_NODE = 8
NVLINK_BPS = 300e9  # A100 NVLink 3, per direction (600 GB/s bidirectional)
NIC_BPS = 25e9  # InfiniBand HDR 200 Gb/s per GPU, per direction
PEAK_FLOPS = 312e12  # A100 dense bf16 (alpaca_jobs/ops/prices.py)
GLOBAL_BATCH, MEAN_TOKENS = 128, 200  # jobs/train.yaml; ops/estimate.py's assumed mean length
STATE_BYTES = 16  # per parameter, sharded: fp32 master weight, fp32 gradient, two fp32 Adam moments

OPS = {"_allgather_base_": "all_gather", "allgather_into_tensor_coalesced_": "all_gather",
       "all_gather_into_tensor": "all_gather", "all_gather_into_tensor_coalesced": "all_gather",
       "_reduce_scatter_base_": "reduce_scatter", "reduce_scatter_tensor_coalesced_": "reduce_scatter",
       "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter_tensor_coalesced": "reduce_scatter",
       "allreduce_": "all_reduce", "allreduce_coalesced_": "all_reduce", "all_reduce": "all_reduce",
       "all_reduce_coalesced": "all_reduce", "broadcast_": "broadcast", "broadcast": "broadcast"}
NOT_DATA = {"wait_tensor", "_wrap_tensor_autograd", "barrier", "monitored_barrier_"}


# ---- counting (worker processes) -------------------------------------------------------------

def _counter():
    """A dispatch mode recording (op, group ranks, bytes) of every collective it sees."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
    from torch.utils._python_dispatch import TorchDispatchMode

    def tensors(x) -> list:
        if isinstance(x, torch.Tensor):
            return [x]
        return [t for y in x for t in tensors(y)] if isinstance(x, list | tuple) else []

    def ranks(args) -> tuple[int, ...]:
        from torch.distributed.distributed_c10d import _resolve_process_group

        for a in reversed(args):  # functional ops: (..., reduce op name, group name)
            if isinstance(a, str):
                return tuple(dist.get_process_group_ranks(_resolve_process_group(a)))
            if isinstance(a, torch.ScriptObject):
                try:
                    return tuple(dist.get_process_group_ranks(dist.ProcessGroup.unbox(a)))
                except RuntimeError:  # a ReduceOp, not a group
                    continue
        raise RuntimeError("collective without a process group")

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[str, tuple[int, ...], int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if any(issubclass(t, DTensor) for t in types):
                return NotImplemented  # DTensor desugars first; its collectives come back here
            out = func(*args, **(kwargs or {}))
            ns, name = func.namespace, func._schema.name.split("::")[-1]
            if ns in ("c10d", "_c10d_functional") and name not in NOT_DATA:
                if name not in OPS:
                    raise RuntimeError(f"uncounted collective {ns}.{name}: add it to OPS")
                size = max(sum(t.numel() * t.element_size() for t in tensors(x)) for x in (*args, out))
                self.rows.append((OPS[name], ranks(args), size))
            return out

    return Counter()


def _model(shape: dict[str, int]):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alpaca_jobs.train import attention
    from alpaca_jobs.train.loading import LossModel

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                      num_hidden_layers=shape["layers"], num_attention_heads=4, num_key_value_heads=4,
                      vocab_size=shape["vocab"], max_position_embeddings=1024)
    lm = LlamaForCausalLM(cfg)
    attention.install(lm, "per_sequence")
    return LossModel(lm)


def _rows(vocab: int, rank: int, step: int):
    import random

    from alpaca_jobs.train.batches import build_row
    from alpaca_jobs.train.data import IGNORE_INDEX, Example

    rng = random.Random(rank * 1000 + step)
    out = []
    for _ in range(2):
        prompt, target = rng.randint(40, 120), rng.randint(40, 120)
        ids = [rng.randrange(3, vocab) for _ in range(prompt + target)]
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return [build_row(out, 0)]


def _layout(sharding: str):
    import yaml

    from alpaca_jobs.spec import Layout

    raw = yaml.safe_load(LAYOUT_FILE.read_text())
    return Layout.model_validate({**raw, "fsdp_config": {**raw["fsdp_config"], "sharding": sharding}})


def _count_one(d, shape: dict[str, int], sharding: str, nodes: int, per_node: int) -> list:
    """Rows of the counted steps (op, group ranks, bytes) of one model under one layout."""
    import torch
    import torch.distributed as dist

    from alpaca_jobs.train import fsdp
    from alpaca_jobs.train.loop import train_step
    from alpaca_jobs.train.mesh import check_world, mesh_layout

    layout = _layout(sharding)
    mesh = mesh_layout(layout.fsdp_config.sharding, nodes, per_node)
    check_world(mesh, nodes, per_node, d.rank, d.world, env={})
    root = _model(shape)
    fsdp.shard(root, root.decoder_layers(layout.fsdp_config.fsdp_transformer_layer_cls_to_wrap),
               layout, d, False, mesh)
    opt = torch.optim.AdamW(root.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    def step(i: int) -> None:
        rows = _rows(shape["vocab"], d.rank, i)
        targets = sum(int(r.target_ids.numel()) for r in rows) * d.world  # the plan's whole-step count
        loss, _ = train_step(root, opt, sched, rows, targets, d, 1.0, "per_sequence", 1024)
        dist.all_reduce(loss.clone())  # as the loop's one_step: the step's loss, read a step later

    for i in range(WARMUP):
        step(i)
    with _counter() as counter:
        for i in range(WARMUP, WARMUP + STEPS):
            step(i)
    return counter.rows


def _worker(rank: int, nodes: int, per_node: int, port: int, out: str) -> None:
    from unittest import mock

    import torch
    import torch.distributed as dist

    from alpaca_jobs.train import fsdp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(nodes * per_node), LOCAL_RANK=str(rank % per_node))
    torch.set_num_threads(1)
    d = fsdp.init_distributed()
    result: dict[str, Any] = {}
    # The GPU's policy (bf16 parameters, fp32 reduction) on CPU: the job's own shard() reads it.
    with mock.patch.object(fsdp, "mixed_precision", lambda layout, device: layout.mixed_precision == "bf16"):
        for name, shape in COUNTED.items():
            for sharding in ("full", "hybrid"):
                result[f"{name}/{sharding}"] = _count_one(d, shape, sharding, nodes, per_node)
    totals = [sum(b for _, _, b in rows) for rows in result.values()]
    every = [None] * d.world
    dist.all_gather_object(every, totals)
    if rank == 0:
        if any(t != totals for t in every):
            raise RuntimeError(f"ranks counted different bytes: {every}")
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def count(nodes: int, per_node: int) -> dict[str, list]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        mp.spawn(_worker, args=(nodes, per_node, port, out), nprocs=nodes * per_node)
        return json.loads(Path(out).read_text())


# ---- the formula (pure) ------------------------------------------------------------------------

def params(shape: dict[str, int]) -> tuple[int, int]:
    """(one decoder layer's parameters, the root's: embedding, head, final norm), Llama untied."""
    d, f = shape["hidden"], shape["inter"]
    return 4 * d * d + 3 * d * f + 2 * d, 2 * shape.get("vocab", VOCAB) * d + d


def dim_of(ranks: list[int], world: int, per_node: int) -> str:
    """Which mesh dimension a group is: all ranks, one node's (shard), one per node (replicate)."""
    nodes = {r // per_node for r in ranks}
    if len(ranks) == world:
        return "all"
    return "shard" if len(nodes) == 1 else "replicate"


def group(dim: str, sharding: str, nodes: int, per_node: int) -> tuple[int, int]:
    """(ranks, nodes spanned) of a mesh dimension's groups."""
    if dim == "all" or sharding == "full":
        return nodes * per_node, nodes
    return (per_node, 1) if dim == "shard" else (nodes, nodes)


def wire(op: str, payload: float, g: int, m: int) -> tuple[float, float]:
    """(bytes a GPU sends over NVLink, over its NIC) for one ring collective (module docstring)."""
    sent = payload * (2 if op == "all_reduce" else 1) * (g - 1) / g
    nic = sent * m / g if m > 1 else 0.0
    return sent - nic, nic


def units(op: str, sharding: str, per_node: int) -> int:
    """How many ranks split the tensor a collective carries: an HSDP all-reduce carries a shard."""
    return per_node if (op == "all_reduce" and sharding == "hybrid") else 1


def tally(rows: list, sharding: str, nodes: int, per_node: int) -> dict[str, Any]:
    """Counted rows of STEPS steps -> per step: unit bytes per (op, dim), wire bytes, scalars."""
    world = nodes * per_node
    unit: dict[str, float] = {}
    nv = nic = across = 0.0
    small, ops = [], {}
    for op, ranks, size in rows:
        dim = dim_of(ranks, world, per_node)
        if size <= SMALL_BYTES:
            small.append(size)
            continue
        ops[op] = ops.get(op, 0) + 1 / STEPS
        g, m = len(ranks), len({r // per_node for r in ranks})
        a, b = wire(op, size / STEPS, g, m)
        nv, nic, across = nv + a, nic + b, across + ((a + b) if m > 1 else 0.0)
        key = f"{op}/{dim}"
        unit[key] = unit.get(key, 0.0) + size * units(op, sharding, per_node) / STEPS
    return {"unit": unit, "nvlink": nv, "nic": nic, "across": across,
            "per_step": ops, "small_per_step": len(small) / STEPS, "small_bytes_per_step": sum(small) / STEPS}


def derive(a: dict[str, float], b: dict[str, float]) -> dict[str, tuple[float, float]]:
    """k_layer, k_root (bytes per parameter per step) per (op, dim), from models A and B."""
    la, ra = params(COUNTED["A"])
    dl = COUNTED["B"]["layers"] - COUNTED["A"]["layers"]
    out = {}
    for key in sorted(set(a) | set(b)):
        k_layer = (b.get(key, 0.0) - a.get(key, 0.0)) / (dl * la)
        out[key] = (k_layer, (a.get(key, 0.0) - k_layer * COUNTED["A"]["layers"] * la) / ra)
    return out


def predict(k: dict[str, tuple[float, float]], shape: dict[str, int], sharding: str, nodes: int,
            per_node: int) -> dict[str, float]:
    """Wire bytes per GPU per step of a model under a layout, from the formula."""
    layer, root = params(shape)
    nv = nic = across = 0.0
    for key, (k_layer, k_root) in k.items():
        op, dim = key.split("/")
        payload = (k_layer * shape["layers"] * layer + k_root * root) / units(op, sharding, per_node)
        g, m = group(dim, sharding, nodes, per_node)
        a, b = wire(op, payload, g, m)
        nv, nic, across = nv + a, nic + b, across + ((a + b) if m > 1 else 0.0)
    return {"nvlink": nv, "nic": nic, "across": across}


def comm_seconds(k: dict[str, tuple[float, float]], shape: dict[str, int], sharding: str, nodes: int,
                 per_node: int) -> float:
    """Collectives one at a time, each as slow as the slower of its NVLink and NIC parts."""
    total = 0.0
    for key, kk in k.items():
        one = predict({key: kk}, shape, sharding, nodes, per_node)
        total += max(one["nvlink"] / NVLINK_BPS, one["nic"] / NIC_BPS)
    return total


def compute_seconds(shape: dict[str, int], gpus: int, mfu: float) -> float:
    layer, root = params(shape)
    n_flop = shape["layers"] * layer + root - VOCAB * shape["hidden"]  # the input embedding is a lookup
    per_token = 6 * n_flop + 12 * shape["layers"] * shape["hidden"] * MEAN_TOKENS
    return GLOBAL_BATCH * MEAN_TOKENS * per_token / (gpus * mfu * PEAK_FLOPS)


# ---- the run ---------------------------------------------------------------------------------------

def check(counts: dict[str, dict], k: dict) -> list[dict[str, Any]]:
    out = []
    for world, per in counts.items():
        nodes, per_node = map(int, world.split("x"))
        for key, t in per.items():
            name, sharding = key.split("/")
            p = predict(k[sharding], COUNTED[name], sharding, nodes, per_node)
            err = max(abs(t[f] - p[f]) / max(t[f], p[f]) for f in ("nvlink", "nic", "across") if max(t[f], p[f]) > 0)
            out.append({"world": world, "model": name, "sharding": sharding, "error": err,
                        **{f"counted_{f}": t[f] for f in ("nvlink", "nic", "across")},
                        **{f"formula_{f}": p[f] for f in ("nvlink", "nic", "across")},
                        **{f: t[f] for f in ("per_step", "small_per_step", "small_bytes_per_step")}})
    return out


def project(k: dict, mfu: float) -> list[dict[str, Any]]:
    out = []
    for name, shape in PLANS.items():
        for nodes in (2, 4):
            gpus = nodes * GPUS_PER_NODE
            for sharding in ("full", "hybrid"):
                w = predict(k[sharding], shape, sharding, nodes, GPUS_PER_NODE)
                serial = comm_seconds(k[sharding], shape, sharding, nodes, GPUS_PER_NODE)
                overlapped = max(w["nic"] / NIC_BPS, w["nvlink"] / NVLINK_BPS)
                compute = compute_seconds(shape, gpus, mfu)
                layer, root = params(shape)
                shard = gpus if sharding == "full" else GPUS_PER_NODE
                total = shape["layers"] * layer + root
                out.append({"model": name, "params": total, "nodes": nodes, "sharding": sharding, **w,
                            "nic_seconds": w["nic"] / NIC_BPS, "nvlink_seconds": w["nvlink"] / NVLINK_BPS,
                            "comm_overlapped_seconds": overlapped, "comm_serial_seconds": serial,
                            "compute_seconds": compute, "hides_to_mfu_serial": mfu * compute / serial,
                            "hides_to_mfu_overlapped": mfu * compute / overlapped,
                            "states_gib": STATE_BYTES * total / shard / 2**30})
    return out


def run(worlds: list[str], mfu: float) -> dict[str, Any]:
    counts = {}
    for world in worlds:
        nodes, per_node = map(int, world.split("x"))
        rows = count(nodes, per_node)
        counts[world] = {key: tally(r, key.split("/")[1], nodes, per_node) for key, r in rows.items()}
    first = counts[worlds[0]]
    k = {s: derive(first[f"A/{s}"]["unit"], first[f"B/{s}"]["unit"]) for s in ("full", "hybrid")}
    checks = check(counts, k)
    return {"worlds": worlds, "mfu": mfu, "k": k, "checks": checks,
            "max_error": max(c["error"] for c in checks), "plans": project(k, mfu)}


def _table(title: str, columns: tuple[str, ...]):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.MARKDOWN, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right")
    return t


def _mfu(x: float) -> str:
    return f"{x:.2f}" if x < 1 else "any"


def _print(r: dict[str, Any]) -> None:
    from rich.console import Console

    con = Console(width=220)
    t = _table(f"k, bytes per parameter per step, derived on {r['worlds'][0]} from models A and B "
               "(HSDP all-reduce: per parameter of the unit it holds a shard of)",
               ("layout", "op / mesh dim", "k_layer", "k_root"))
    for s, ks in r["k"].items():
        for key, (kl, kr) in ks.items():
            t.add_row(s, key, f"{kl:.3f}", f"{kr:.3f}")
    con.print(t)
    t = _table("counted vs formula, bytes sent per GPU per step (small: loss, grad-norm partials)",
               ("world", "model", "layout", "collectives/step", "small/step", "across nodes counted",
                "formula", "NIC counted", "formula", "NVLink counted", "formula", "worst error"))
    for c in r["checks"]:
        ops = ", ".join(f"{op} {n:g}" for op, n in sorted(c["per_step"].items()))
        t.add_row(c["world"], c["model"], c["sharding"], ops,
                  f"{c['small_per_step']:g} ({c['small_bytes_per_step']:g} B)",
                  *(f"{c[f'{w}_{f}']:,.0f}" for f in ("across", "nic", "nvlink") for w in ("counted", "formula")),
                  f"{100 * c['error']:.2f}%")
    con.print(t)
    t = _table(f"projection: A100-80GB x {GPUS_PER_NODE} per node; NVLink {NVLINK_BPS / 1e9:.0f} GB/s, NIC "
               f"{NIC_BPS / 1e9:.0f} GB/s per GPU and direction; {GLOBAL_BATCH} x {MEAN_TOKENS} tokens per "
               f"step; compute at MFU {r['mfu']:.2f}; comm: links in parallel - one collective at a time",
               ("model", "params", "nodes", "layout", "across nodes GB/GPU", "NIC GB/GPU", "NVLink GB/GPU", "NIC s",
                "NVLink s", "comm s", "compute s", "hidden", "hides to MFU", "states GiB/GPU", "fit 80 GiB"))
    for p in r["plans"]:
        lo, hi = p["comm_overlapped_seconds"], p["comm_serial_seconds"]
        hidden = "yes" if hi <= p["compute_seconds"] else "no" if lo > p["compute_seconds"] else "if overlapped"
        t.add_row(p["model"], f"{p['params'] / 1e9:.2f}B", str(p["nodes"]), p["sharding"], f"{p['across'] / 1e9:.2f}", f"{p['nic'] / 1e9:.2f}",
                  f"{p['nvlink'] / 1e9:.2f}", f"{p['nic_seconds']:.3f}", f"{p['nvlink_seconds']:.3f}",
                  f"{lo:.3f}-{hi:.3f}", f"{p['compute_seconds']:.3f}", hidden,
                  f"{_mfu(p['hides_to_mfu_serial'])}-{_mfu(p['hides_to_mfu_overlapped'])}",
                  f"{p['states_gib']:.1f}", "yes" if p["states_gib"] <= 80 else "no")
    con.print(t)
    by = {(p["model"], p["nodes"], p["sharding"]): p for p in r["plans"]}
    for name in PLANS:
        for nodes in (2, 4):
            h, f = by[(name, nodes, "hybrid")], by[(name, nodes, "full")]
            con.print(f"{name} on {nodes} nodes, HSDP / full shard: bytes in collectives across nodes "
                      f"{h['across'] / f['across']:.3f}x, on the NIC {h['nic'] / f['nic']:.3f}x; comm time "
                      f"{h['comm_overlapped_seconds'] / f['comm_overlapped_seconds']:.3f}x (links in parallel), "
                      f"{h['comm_serial_seconds'] / f['comm_serial_seconds']:.3f}x (one at a time)")
    con.print(f"formula vs count: worst error {100 * r['max_error']:.3f}% (tolerance {100 * TOLERANCE:.0f}%)")


def _worlds(text: str) -> list[str]:
    out = []
    for w in text.split(","):
        nodes, _, per = w.strip().partition("x")
        if not (nodes.isdigit() and per.isdigit() and int(nodes) >= 2 and int(per) >= 2):
            raise argparse.ArgumentTypeError(f"{w!r}: give NODESxPROCESSES with both at least 2, e.g. 2x2")
        if int(nodes) * int(per) > 16:
            raise argparse.ArgumentTypeError(f"{w!r}: at most 16 processes on this machine")
        out.append(f"{int(nodes)}x{int(per)}")
    return out


def _mfu_arg(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in (0, 1], e.g. 0.4")
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", type=_worlds, default="2x2,2x4,4x2",
                    help="simulated nodes x processes per node, comma-separated; k comes from the first")
    ap.add_argument("--mfu", type=_mfu_arg, default=0.40, help="assumed model FLOPs utilisation")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args.worlds, args.mfu)
    if args.json:
        print(json.dumps(r))
    else:
        _print(r)
    if r["max_error"] > TOLERANCE:
        bad = [c for c in r["checks"] if c["error"] > TOLERANCE]
        sys.exit(f"collectives: the formula misses the count by more than {100 * TOLERANCE:.0f}%: {bad}")


if __name__ == "__main__":
    main()
