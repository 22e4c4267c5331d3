"""The cost projection behind ``alpaca-jobs cost estimate`` (``cli/costs.py``): project the 7B recipe's cost on 8x A100-80GB, formula shown.

    tokens      = examples x epochs x mean tokens per example
    tokens/s    = given, or MFU x peak FLOP/s x GPUs / FLOPs per token
    FLOPs/token = 6 N + 12 L d T        (PaLM appendix B; N params without the input
                                         embedding, L layers, d width, T length)
    GPU-hours   = tokens / tokens/s / 3600 x GPUs
    cost        = GPU-hours x price per GPU-hour

From a run record measured on another GPU, the MFU carries over (each GPU at the same share of
its own dense bf16 peak), so tokens/s scale by the ratio of the two peaks. Communication is
assumed hidden behind compute: FSDP2 prefetches the next layer's all-gather while one computes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.prices import PEAK_BF16_FLOPS

ALPACA_EXAMPLES = 52_002  # records in Stanford's alpaca_data.json
# LLaMA paper, table 2: 6.74e9 parameters; the FLOPs count all but the 32000 x 4096 input
# embedding table (a lookup), as the training job's MFU does.
LLAMA_7B = {"params": 6.74e9 - 32000 * 4096, "layers": 32, "hidden": 4096}
ASSUMED_MEAN_TOKENS = 200


@dataclass(frozen=True)
class Estimate:
    tokens: float
    tokens_per_second: float
    hours: float
    gpu_hours: float
    cost_usd: float
    lines: list[str]


def flops_per_token(mean_tokens: float) -> float:
    m = LLAMA_7B
    return 6 * m["params"] + 12 * m["layers"] * m["hidden"] * mean_tokens


def estimate(
    *, gpus: int, price: float, epochs: int, examples: int, mean_tokens: float,
    tokens_per_second: float | None = None, mfu: float | None = None, peak: float = PEAK_BF16_FLOPS["A100"],
) -> Estimate:
    tokens = examples * epochs * mean_tokens
    lines = [f"tokens      = {examples} examples x {epochs} epochs x {mean_tokens:.1f} tokens = {tokens:,.0f}"]
    if tokens_per_second is None:
        if mfu is None:
            raise UserError("give a throughput: --tokens-per-second, --mfu, or --record with a GPU run's MFU")
        fpt = flops_per_token(mean_tokens)
        tokens_per_second = mfu * peak * gpus / fpt
        lines.append(f"FLOPs/token = 6 x {LLAMA_7B['params']:.3g} + 12 x {LLAMA_7B['layers']} x "
                     f"{LLAMA_7B['hidden']} x {mean_tokens:.1f} = {fpt:.4g}")
        lines.append(f"tokens/s    = {mfu:.3f} MFU x {peak:.3g} FLOP/s x {gpus} GPUs / {fpt:.4g} = {tokens_per_second:,.0f}")
    else:
        lines.append(f"tokens/s    = {tokens_per_second:,.0f} (given, whole node)")
    hours = tokens / tokens_per_second / 3600
    gpu_hours = hours * gpus
    cost = gpu_hours * price
    lines += [
        f"wall        = {tokens:,.0f} / {tokens_per_second:,.0f} / 3600 = {hours:.2f} h",
        f"GPU-hours   = {hours:.2f} h x {gpus} GPUs = {gpu_hours:.1f}",
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
