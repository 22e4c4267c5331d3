"""The cost projection behind ``alpaca-jobs cost estimate`` (``cli/costs.py``): project a
recipe's cost (7B, 13B or 65B LLaMA shapes) on N nodes of GPUs, formula shown.

    tokens      = examples x epochs x mean tokens per example
    FLOPs/token = 6 N + 12 L d T        (PaLM appendix B; N params without the input
                                         embedding, L layers, d width, T length)
    compute     = tokens per step x FLOPs/token / (MFU x peak FLOP/s x GPUs)   per step
    comm        = bytes through each GPU's network link per step / its share of the node's
                  inter-node bandwidth                                         per step
                  full shard: (W-1)/W x 8 B x N / g   (two bf16 all-gathers, one fp32
                              reduce-scatter over all W ranks; a ring leaves a node on 1 hop in g)
                  hybrid:     2 (n-1)/n x 4 B x N / g (one fp32 all-reduce of a node's shard
                              across the n nodes)  -- bench/collectives.py counts these bytes
    step        = max(compute, comm)    (FSDP2 prefetches: communication overlaps compute)
    GPU-hours   = steps x step / 3600 x GPUs;  cost = GPU-hours x price per GPU-hour

One node has no inter-node traffic (NVLink is assumed never to be the limit). From a run record
measured on another GPU, the MFU carries over (each GPU at the same share of its own dense bf16
peak), so tokens/s scale by the ratio of the two peaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.prices import PEAK_BF16_FLOPS

ALPACA_EXAMPLES = 52_002  # records in Stanford's alpaca_data.json
ASSUMED_MEAN_TOKENS = 200
GLOBAL_BATCH = 128  # examples per optimizer step in every Alpaca recipe
# Assumed inter-node bandwidth per node: 8 x 200 Gb/s InfiniBand HDR (one NIC per GPU, as on
# DGX A100 / AWS p4d-class nodes) = 200 GB/s per direction, at link peak.
INTER_NODE_GBS = 200.0
# LLaMA paper (Touvron et al. 2023), table 2. "params" counts all but the 32000 x d input
# embedding table (a lookup), as the training job's MFU does; "total" is what is communicated.
MODELS = {
    "llama-7b": {"total": 6.74e9, "layers": 32, "hidden": 4096},
    "llama-13b": {"total": 13.0e9, "layers": 40, "hidden": 5120},
    "llama-65b": {"total": 65.2e9, "layers": 80, "hidden": 8192},
}
for _m in MODELS.values():
    _m["params"] = _m["total"] - 32000 * _m["hidden"]
LLAMA_7B = MODELS["llama-7b"]


@dataclass(frozen=True)
class Estimate:
    tokens: float
    tokens_per_second: float
    hours: float
    gpu_hours: float
    cost_usd: float
    lines: list[str]


def flops_per_token(mean_tokens: float, model: str = "llama-7b") -> float:
    m = MODELS[model]
    return 6 * m["params"] + 12 * m["layers"] * m["hidden"] * mean_tokens


def comm_bytes(model: str, nodes: int, per_node: int, sharding: str) -> float:
    """Bytes through each GPU's inter-node link per optimizer step (0 on one node)."""
    if nodes == 1:
        return 0.0
    n, world = MODELS[model]["total"], nodes * per_node
    if sharding == "hybrid":
        return 2 * (nodes - 1) / nodes * 4 * n / per_node
    return (world - 1) / world * 8 * n / per_node


def estimate(
    *, gpus: int, price: float, epochs: int, examples: int, mean_tokens: float,
    tokens_per_second: float | None = None, mfu: float | None = None, peak: float = PEAK_BF16_FLOPS["A100"],
    model: str = "llama-7b", nodes: int = 1, sharding: str = "auto", inter_node_gbs: float = INTER_NODE_GBS,
) -> Estimate:
    """``gpus``: per node. ``sharding`` auto: hybrid on more than one node (train/mesh.py)."""
    m, world = MODELS[model], gpus * nodes
    sharding = ("hybrid" if nodes > 1 else "full") if sharding == "auto" else sharding
    tokens = examples * epochs * mean_tokens
    lines = [f"tokens      = {examples} examples x {epochs} epochs x {mean_tokens:.1f} tokens = {tokens:,.0f}"]
    if tokens_per_second is None:
        if mfu is None:
            raise UserError("give a throughput: --tokens-per-second, --mfu, or --record with a GPU run's MFU")
        fpt = flops_per_token(mean_tokens, model)
        tokens_per_second = mfu * peak * world / fpt
        lines.append(f"FLOPs/token = 6 x {m['params']:.3g} + 12 x {m['layers']} x "
                     f"{m['hidden']} x {mean_tokens:.1f} = {fpt:.4g}")
        lines.append(f"tokens/s    = {mfu:.3f} MFU x {peak:.3g} FLOP/s x {world} GPUs / {fpt:.4g} = "
                     f"{tokens_per_second:,.0f} (compute)")
    else:
        lines.append(f"tokens/s    = {tokens_per_second:,.0f} (given, all {world} GPUs)")
    if nodes > 1:
        step_tokens = GLOBAL_BATCH * mean_tokens
        compute = step_tokens / tokens_per_second
        link = inter_node_gbs * 1e9 / gpus
        comm = comm_bytes(model, nodes, gpus, sharding) / link
        lines.append(f"comm/step   = {comm_bytes(model, nodes, gpus, sharding) / 1e9:.2f} GB per GPU ({sharding} "
                     f"shard, {nodes} nodes) / {link / 1e9:.1f} GB/s ({inter_node_gbs:g} GB/s per node "
                     f"assumed / {gpus} GPUs) = {comm:.3f} s")
        step = max(compute, comm)
        bound = "communication-bound" if comm > compute else "communication hidden behind compute"
        lines.append(f"step        = max(compute {compute:.3f} s, comm {comm:.3f} s) = {step:.3f} s ({bound})")
        tokens_per_second = step_tokens / step
    hours = tokens / tokens_per_second / 3600
    gpu_hours = hours * world
    cost = gpu_hours * price
    lines += [
        f"wall        = {tokens:,.0f} / {tokens_per_second:,.0f} / 3600 = {hours:.2f} h",
        f"GPU-hours   = {hours:.2f} h x {world} GPUs = {gpu_hours:.1f}",
        f"cost        = {gpu_hours:.1f} GPU-h x ${price:.2f} = ${cost:.2f}",
    ]
    return Estimate(tokens, tokens_per_second, hours, gpu_hours, cost, lines)


def from_record(record: str, gpu_type: str, mean_tokens: float | None, mfu: float | None,
                tokens_per_second: float | None) -> tuple[float | None, float | None, str]:
    """(mean tokens, MFU, how it carries over) from a run record, where not given."""
    note = ""
    rec = json.loads(Path(record).read_text())
    data = rec.get("data") or {}
    if mean_tokens is None and data.get("kept"):
        mean_tokens = (data["prompt_tokens"] + data["target_tokens"]) / data["kept"]
    if mfu is None and tokens_per_second is None:
        mfu = (rec.get("results") or {}).get("mfu_after_warmup") or rec.get("mfu")
        if mfu is None:
            raise UserError(f"{record}: no MFU in this record (CPU run); pass --mfu or --tokens-per-second")
        note = _carried_over(rec, mfu, gpu_type, peak_for(gpu_type))
    return mean_tokens, mfu, note


def peak_for(gpu_type: str) -> float:
    """The dense bf16 peak of a price-table GPU type (a100-80gb -> A100)."""
    for key, flops in PEAK_BF16_FLOPS.items():
        if key.lower() in gpu_type.lower():
            return flops
    known = ", ".join(k.lower() for k in PEAK_BF16_FLOPS)
    raise UserError(f"--gpu-type {gpu_type}: no dense bf16 peak known for it; use one of {known} "
                    "or pass --tokens-per-second")


def _carried_over(rec: dict, mfu: float, gpu_type: str, peak: float) -> str:
    """How a measured MFU becomes the target GPU's throughput, said in one line."""
    from alpaca_jobs.ops.prices import peak_flops

    measured_on = rec.get("device_name") or (rec.get("results") or {}).get("device_name") or rec.get("device", "?")
    source_peak = peak_flops(str(measured_on)) or peak
    which = "after warm-up" if (rec.get("results") or {}).get("mfu_after_warmup") else "whole loop"
    return (f"MFU {mfu:.3f} measured on {measured_on} ({which}, peak {source_peak / 1e12:.0f} TFLOP/s), "
            f"assumed the same on {gpu_type} (peak {peak / 1e12:.0f}): tokens/s scale by "
            f"{peak / source_peak:.3f}; communication assumed overlapped with compute")
