"""Default prices, peak FLOP rates and GPU memory, each with its public source. Override per spec."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alpaca_jobs.common.errors import UserError


@dataclass(frozen=True)
class Price:
    usd_per_gpu_hour: float
    source: str


GPU_PRICES: dict[str, Price] = {
    "a100-80gb": Price(
        3.43,
        "AWS p4de.24xlarge on-demand list price, $27.45/h for 8x A100-80GB = $3.43/GPU-h "
        "(read 2026-11; Lambda lists $1.79-2.79, RunPod $1.39-1.79)",
    ),
}

# Dense bf16 tensor-core peak per GPU, from NVIDIA's datasheets (A100: 312 TFLOP/s;
# H100 SXM and H200: 989 TFLOP/s). Matched against torch.cuda.get_device_name().
PEAK_BF16_FLOPS: dict[str, float] = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


@dataclass(frozen=True)
class ApiPrice:
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source: str


_OPENAI = "OpenAI list price per 1M tokens (platform.openai.com/docs/pricing, read 2026-11)"
# Longest prefix wins, so dated snapshots ("gpt-4o-mini-2024-07-18") find their family.
API_PRICES: dict[str, ApiPrice] = {
    "gpt-4o-mini": ApiPrice(0.15, 0.60, _OPENAI),
    "gpt-4o": ApiPrice(2.50, 10.00, _OPENAI),
    "gpt-4.1-mini": ApiPrice(0.40, 1.60, _OPENAI),
    "gpt-4.1": ApiPrice(2.00, 8.00, _OPENAI),
    "gpt-3.5-turbo-instruct": ApiPrice(1.50, 2.00, _OPENAI),
    "gpt-3.5-turbo": ApiPrice(0.50, 1.50, _OPENAI),
    # What Alpaca used (Stanford's blog: text-davinci-003, $0.02 per 1K tokens either way).
    "text-davinci-003": ApiPrice(20.0, 20.0, "OpenAI's 2023 price, $0.02/1K tokens (Alpaca's teacher)"),
}


def api_price(model: str, base_url: str | None, input_override: float | None,
              output_override: float | None) -> ApiPrice:
    """Per-token prices of an endpoint: the spec's, else the table's for OpenAI's own API,
    else zero for a self-hosted server (its cost is the GPU time of its own job)."""
    known = max((k for k in API_PRICES if model.startswith(k)), key=len, default=None)
    hosted = base_url is None or "api.openai.com" in base_url
    if known and hosted:
        base = API_PRICES[known]
    elif hosted and (input_override is None or output_override is None):
        raise UserError(f"model {model!r} has no default price: set input_usd_per_mtok and "
                        f"output_usd_per_mtok in the spec's endpoint (known: {', '.join(API_PRICES)})")
    else:
        base = ApiPrice(0.0, 0.0, "self-hosted endpoint: no per-token price (its GPU time is "
                                  "its own job's)")
    if input_override is None and output_override is None:
        return base
    return ApiPrice(base.input_usd_per_mtok if input_override is None else input_override,
                    base.output_usd_per_mtok if output_override is None else output_override,
                    "the job spec's input/output_usd_per_mtok")


def gpu_price(gpu_type: str | None, override: float | None) -> Price:
    """The price per GPU-hour for a job: the spec's override, else the table's default."""
    if override is not None:
        return Price(override, "cost.gpu_hour_usd in the job spec")
    if gpu_type is None:
        return Price(0.0, "no GPUs")
    if gpu_type not in GPU_PRICES:
        raise UserError(
            f"cost.gpu_hour_usd: no default price for gpu_type {gpu_type!r} "
            f"(known: {', '.join(GPU_PRICES)}); set cost.gpu_hour_usd in the spec"
        )
    return GPU_PRICES[gpu_type]


# Memory per GPU in GiB, as nvidia-smi reports memory.total (A100-SXM4-80GB: 81920 MiB;
# A100 40GB: 40960 MiB; H100 SXM 80GB HBM3: 81559 MiB; H200: 143771 MiB). The memory check
# before launch (train/memory.py) holds a training layout to it. A gpu_type not listed here
# that ends in "-<N>gb" is taken to have N GiB.
GPU_MEMORY_GIB: dict[str, float] = {
    "a100-40gb": 40960 / 1024,
    "a100-80gb": 81920 / 1024,
    "h100-80gb": 81559 / 1024,
    "h200-141gb": 143771 / 1024,
}


def gpu_memory_gib(gpu_type: str | None) -> float | None:
    """The memory of one GPU of ``gpu_type``: the table's, else the ``-<N>gb`` in its name,
    else None (unknown: nothing to check against)."""
    if not gpu_type:
        return None
    if gpu_type in GPU_MEMORY_GIB:
        return GPU_MEMORY_GIB[gpu_type]
    m = re.search(r"-(\d+)gb$", gpu_type.lower())
    return float(m.group(1)) if m else None


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name.upper():
            return flops
    return None
