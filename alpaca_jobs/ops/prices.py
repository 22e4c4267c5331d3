"""Default prices and peak FLOP rates, each with its public source. Override per spec."""

from __future__ import annotations

from dataclasses import dataclass

from alpaca_jobs.errors import UserError


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


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name.upper():
            return flops
    return None
