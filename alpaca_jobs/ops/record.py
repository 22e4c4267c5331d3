"""The run record: what a run measured about itself, as ``run.json`` beside its outputs.

The model and its file only; it imports nothing else from ops (building a record is
``ops.records``, publishing it ``ops.sinks``, printing it ``ops.present``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.common.files import atomic_write

RECORD_FILE = "run.json"


@dataclass
class Usage:
    attempts: int
    wall_seconds: float
    cpu_seconds: float


@dataclass
class RunRecord:
    run_id: str
    job: str
    backend: str
    status: str  # completed | interrupted | failed
    nodes: int
    gpus_per_node: int
    gpu_type: str | None
    processes: int
    attempts: int
    wall_seconds: float
    gpu_seconds: float
    gpu_hours: float
    cpu_seconds: float
    cpu_hours: float
    price_per_gpu_hour_usd: float
    price_source: str
    cpu_core_hour_usd: float
    cost_usd: float
    target_usd: float | None
    target_met: bool | None
    steps: int = 0
    total_steps: int = 0
    tokens_trained: int = 0
    target_tokens_trained: int = 0
    train_loop_seconds: float = 0.0
    checkpoint_seconds: float = 0.0  # training blocked by checkpoints (billed, not loop time)
    tokens_per_second: float = 0.0
    mfu: float | None = None
    device: str = "cpu"
    first_loss: float | None = None
    final_loss: float | None = None
    model_dir: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    api: dict[str, Any] | None = None  # spend on OpenAI-compatible APIs (generate, evaluate)
    api_cost_usd: float = 0.0  # kept apart from cost_usd, which is compute (GPU/CPU) only
    results: dict[str, Any] = field(default_factory=dict)  # the stage's outcome in numbers
    error: str | None = None
    scheduler: dict[str, Any] | None = None  # the scheduler's own accounting, when it has one
    started_at: str = ""
    finished_at: str = ""

    def write(self, run_dir: Path) -> Path:
        path = run_dir / RECORD_FILE
        atomic_write(path, json.dumps(asdict(self), indent=1) + "\n")
        return path


def load_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None




def cost_fields(
    usage: Usage,
    nodes: int,
    gpus_per_node: int,
    gpu_price: float,
    cpu_core_hour_usd: float,
    target_usd: float | None,
) -> dict[str, Any]:
    """GPU-seconds = job wall seconds x GPUs held; cost = GPU-hours x price (+ CPU-hours x price)."""
    gpu_seconds = usage.wall_seconds * nodes * gpus_per_node
    cost = gpu_seconds / 3600 * gpu_price + usage.cpu_seconds / 3600 * cpu_core_hour_usd
    return dict(
        attempts=usage.attempts,
        wall_seconds=round(usage.wall_seconds, 3),
        gpu_seconds=round(gpu_seconds, 3),
        gpu_hours=round(gpu_seconds / 3600, 6),
        cpu_seconds=round(usage.cpu_seconds, 3),
        cpu_hours=round(usage.cpu_seconds / 3600, 6),
        cost_usd=round(cost, 6),
        target_usd=target_usd,
        target_met=None if target_usd is None else cost <= target_usd,
    )
