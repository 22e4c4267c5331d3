"""The cost projection behind ``alpaca-jobs cost estimate`` (``cli/costs.py``): the 7B, 13B or
65B recipe's cost, formula shown.

    tokens      = examples x epochs x mean tokens per example
    FLOPs/token = 6 N + 12 L d T        (PaLM appendix B; N params without the input
                                         embedding, L layers, d width, T length)
                  x 4/3 with activation checkpointing (the forward runs again in backward)
    tokens/s    = given, or MFU x peak FLOP/s x GPUs / FLOPs per token
    GPU-hours   = tokens / tokens/s / 3600 x GPUs
    cost        = GPU-hours x price per GPU-hour

On more than one node the inter-node links are in the formula, per optimizer step:

    compute/step = step tokens x FLOPs/token / (MFU x peak x GPUs)
    comm/step    = bytes each node sends across nodes / bandwidth per node
                   full shard: (2 + 2 + 4) B x params x (nodes - 1) / nodes   (a bf16 all-gather
                     of the weights in forward and again in backward, an fp32 reduce-scatter of
                     the gradients: the loop's dtypes, train/fsdp.py)
                   hybrid:     2 x 4 B x params x (nodes - 1) / nodes         (one ring all-reduce
                     of each node's fp32 gradient shard; all-gathers stay on NVLink)
    step         = max(compute, comm): overlapped, as FSDP2 prefetches the next layer's
                   all-gather and reduce-scatters one layer's gradients while the next computes
    tokens/s     = step tokens / step

Within one node, communication is assumed hidden behind compute (NVLink). Bandwidth per node
(an assumption, --node-bandwidth): 200 GB/s, the 8 x 200 Gb/s HDR InfiniBand ports of an
NVIDIA DGX A100 (its datasheet); AWS p4de instances have 4 x 100 Gb/s EFA = 50 GB/s.

From a run record measured on another GPU, the MFU carries over (each GPU at the same share of
its own dense bf16 peak), so tokens/s scale by the ratio of the two peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.prices import PEAK_BF16_FLOPS
from alpaca_jobs.ops.shapes import LLAMA, ModelShape

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord

ALPACA_EXAMPLES = 52_002  # records in Stanford's alpaca_data.json
# LLaMA paper, table 2: 6.74e9 parameters; the FLOPs count all but the 32000 x 4096 input
# embedding table (a lookup), as the training job's MFU does.
LLAMA_7B = {"params": LLAMA["7b"].flop_params, "layers": 32, "hidden": 4096}
ASSUMED_MEAN_TOKENS = 200
NODE_BANDWIDTH = 200e9  # bytes/s per node: 8 x 200 Gb/s HDR InfiniBand (NVIDIA DGX A100 datasheet)
RECOMPUTE = 4 / 3  # activation checkpointing: forward (2N) + backward (4N) + forward again (2N)


@dataclass(frozen=True)
class Recipe:
    """What ``--model`` projects by default: the recipe in jobs/ (a test holds them equal)."""

    spec: str
    epochs: int
    nodes: int
    sharding: str  # full | hybrid
    recompute: bool  # the layout's activation checkpointing
    global_batch: int = 128


RECIPES: dict[str, Recipe] = {
    "7b": Recipe("jobs/train.yaml", epochs=3, nodes=1, sharding="full", recompute=False),
    "13b": Recipe("jobs/train-13b.yaml", epochs=5, nodes=2, sharding="hybrid", recompute=True),
    "65b": Recipe("jobs/train-65b.yaml", epochs=3, nodes=4, sharding="full", recompute=True),
}


def resolve_sharding(requested: str, nodes: int) -> str:
    """As train/mesh.py resolves it: auto is hybrid across nodes; one node is always full."""
    if nodes == 1:
        return "full"
    return "hybrid" if requested == "auto" else requested


def comm_bytes_per_node(shape: ModelShape, nodes: int, sharding: str) -> tuple[float, str]:
    """Bytes each node sends across nodes per optimizer step, and the formula in words."""
    frac = (nodes - 1) / nodes
    if sharding == "hybrid":
        return 2 * 4 * shape.params * frac, f"2 x 4 B x {shape.params:.3g} params x ({nodes}-1)/{nodes}"
    return (2 + 2 + 4) * shape.params * frac, f"(2 + 2 + 4) B x {shape.params:.3g} params x ({nodes}-1)/{nodes}"


@dataclass(frozen=True)
class Estimate:
    tokens: float
    tokens_per_second: float
    hours: float
    gpu_hours: float
    cost_usd: float
    lines: list[str]
    step_seconds: float | None = None  # on more than one node, from MFU: max(compute, comm)
    comm_seconds: float | None = None


def flops_per_token(mean_tokens: float, shape: ModelShape = LLAMA["7b"]) -> float:
    return 6 * shape.flop_params + 12 * shape.layers * shape.hidden * mean_tokens


def estimate(
    *, gpus: int, price: float, epochs: int, examples: int, mean_tokens: float,
    tokens_per_second: float | None = None, mfu: float | None = None, peak: float = PEAK_BF16_FLOPS["A100"],
    model: str = "7b", nodes: int = 1, sharding: str = "auto", node_bandwidth: float = NODE_BANDWIDTH,
    global_batch: int = 128, recompute: bool = False,
) -> Estimate:
    """``gpus``: all of them (nodes x per node)."""
    shape = LLAMA[model]
    tokens = examples * epochs * mean_tokens
    lines = [f"tokens      = {examples} examples x {epochs} epochs x {mean_tokens:.1f} tokens = {tokens:,.0f}"]
    step = comm = None
    if tokens_per_second is None:
        if mfu is None:
            raise UserError("give a throughput: --tokens-per-second, --mfu, or --record with a GPU run's MFU")
        fpt = flops_per_token(mean_tokens, shape)
        lines.append(f"FLOPs/token = 6 x {shape.flop_params:.3g} + 12 x {shape.layers} x "
                     f"{shape.hidden} x {mean_tokens:.1f} = {fpt:.4g}")
        if recompute:
            fpt *= RECOMPUTE
            lines.append(f"            x 4/3 (activation checkpointing: the forward again in backward) = {fpt:.4g}")
        rate = mfu * peak * gpus
        if nodes == 1:
            tokens_per_second = rate / fpt
            lines.append(f"tokens/s    = {mfu:.3f} MFU x {peak:.3g} FLOP/s x {gpus} GPUs / {fpt:.4g} = {tokens_per_second:,.0f}")
            lines.append("comm        = within one node (NVLink): assumed hidden behind compute")
        else:
            tokens_per_second, step, comm = _across_nodes(lines, shape, fpt, rate, mfu, peak, gpus, nodes,
                                                          resolve_sharding(sharding, nodes), node_bandwidth,
                                                          global_batch * mean_tokens)
    else:
        lines.append(f"tokens/s    = {tokens_per_second:,.0f} (given, all {gpus} GPUs: communication included)")
    hours = tokens / tokens_per_second / 3600
    gpu_hours = hours * gpus
    cost = gpu_hours * price
    lines += [
        f"wall        = {tokens:,.0f} / {tokens_per_second:,.0f} / 3600 = {hours:.2f} h",
        f"GPU-hours   = {hours:.2f} h x {gpus} GPUs = {gpu_hours:.1f}",
        f"cost        = {gpu_hours:.1f} GPU-h x ${price:.2f} = ${cost:.2f}",
    ]
    return Estimate(tokens, tokens_per_second, hours, gpu_hours, cost, lines, step, comm)


def _across_nodes(lines: list[str], shape: ModelShape, fpt: float, rate: float, mfu: float, peak: float,
                  gpus: int, nodes: int, sharding: str, bandwidth: float,
                  step_tokens: float) -> tuple[float, float, float]:
    """tokens/s from one optimizer step's compute and inter-node traffic, overlapped; adds the lines."""
    compute = step_tokens * fpt / rate
    sent, words = comm_bytes_per_node(shape, nodes, sharding)
    comm = sent / bandwidth
    step = max(compute, comm)
    what = ("hybrid: one fp32 all-reduce of each node's gradient shard" if sharding == "hybrid" else
            "full shard: bf16 all-gather in forward and backward, fp32 reduce-scatter")
    bound = "compute-bound" if compute >= comm else "COMMUNICATION-BOUND: more nodes will not help"
    tokens_per_second = step_tokens / step
    lines += [
        f"step tokens = {step_tokens:,.0f} (global batch x mean tokens)",
        f"compute     = {step_tokens:,.0f} x {fpt:.4g} / ({mfu:.3f} MFU x {peak:.3g} FLOP/s x {gpus} GPUs) = {compute:.3f} s/step",
        f"comm        = {words} / {bandwidth / 1e9:g} GB/s per node = {comm:.3f} s/step ({what})",
        f"bandwidth   = {bandwidth / 1e9:g} GB/s per node across nodes ("
        + ("assumed: 8 x 200 Gb/s HDR InfiniBand, a DGX A100's fabric; --node-bandwidth to change it)"
           if bandwidth == NODE_BANDWIDTH else "given: --node-bandwidth)"),
        f"step        = max(compute, comm) = {step:.3f} s (overlapped: FSDP2 prefetches and reduces layer "
        f"by layer while others compute; {bound})",
        f"tokens/s    = {step_tokens:,.0f} / {step:.3f} = {tokens_per_second:,.0f}",
    ]
    return tokens_per_second, step, comm


def from_record(record: str, gpu_type: str, mean_tokens: float | None, mfu: float | None,
                tokens_per_second: float | None) -> tuple[float | None, float | None, str]:
    """(mean tokens, MFU, how it carries over) from a run record, where not given."""
    note = ""
    from alpaca_jobs.ops.record import RunRecord

    try:
        text = Path(record).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--record {record}: cannot read it ({exc})") from None
    rec = RunRecord.from_json(text, record)
    data = rec.data
    if mean_tokens is None and data.get("kept"):
        mean_tokens = (data["prompt_tokens"] + data["target_tokens"]) / data["kept"]
    if mfu is None and tokens_per_second is None:
        mfu = rec.results.get("mfu_after_warmup") or rec.mfu
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


def _carried_over(rec: RunRecord, mfu: float, gpu_type: str, peak: float) -> str:
    """How a measured MFU becomes the target GPU's throughput, said in one line."""
    from alpaca_jobs.ops.prices import peak_flops

    measured_on = rec.results.get("device_name") or rec.device
    source_peak = peak_flops(str(measured_on)) or peak
    which = "after warm-up" if rec.results.get("mfu_after_warmup") else "whole loop"
    return (f"MFU {mfu:.3f} measured on {measured_on} ({which}, peak {source_peak / 1e12:.0f} TFLOP/s), "
            f"assumed the same on {gpu_type} (peak {peak / 1e12:.0f}): tokens/s scale by "
            f"{peak / source_peak:.3f}; communication assumed overlapped with compute")
