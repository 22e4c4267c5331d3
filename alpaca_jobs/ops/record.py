"""The run record: what a run measured about itself, as ``run.json`` beside its outputs.

The model and its file only; it imports nothing else from ops (building a record is
``ops.records``, publishing it ``ops.sinks``, printing it ``ops.present``). Every reader gets a
``RunRecord`` back (``load_record``, ``RunRecord.from_dict``, the ledger's ``records``), checked
field by field, never the raw mapping; a file that is not a record is a ``RecordError`` naming
it and the field. Fields this version does not know (a newer writer's) are ignored on reading.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.files import atomic_write
from alpaca_jobs.common.statefiles import as_type, read_json

RECORD_FILE = "run.json"
# "running": a live job's record as it stands; "stopped": a server that was told to stop.
STATUSES = ("running", "completed", "interrupted", "failed", "stopped")


class RecordError(UserError):
    """A run record (``run.json``, a ledger row) that is not one: what is wrong, and where."""


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
    status: str  # one of STATUSES
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
    target_usd: float | None = None  # missing in a record an older writer left: see from_dict
    target_met: bool | None = None
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

    @property
    def gpus(self) -> int:
        """GPUs held: nodes x GPUs per node."""
        return self.nodes * self.gpus_per_node

    @property
    def total_cost_usd(self) -> float:
        """Compute plus API spend."""
        return self.cost_usd + self.api_cost_usd

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write(self, run_dir: Path) -> Path:
        path = run_dir / RECORD_FILE
        atomic_write(path, self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "run record") -> RunRecord:
        """The record in ``data`` (a ``run.json``'s mapping), each field checked; a RecordError
        naming ``source`` and every wrong or missing field otherwise."""
        if isinstance(data, dict) and "target_usd" not in data:  # an older writer's: its kind's budget
            data = {**data, "target_usd": _default_target(data.get("job"))}
        rec = as_type(RunRecord, data, source, RecordError, "a run record (a JSON object)",
                      nonempty=("run_id", "job", "backend"))
        if rec.status not in STATUSES:
            raise RecordError(f"{source}: status: {rec.status!r} is not one of {', '.join(STATUSES)}")
        return rec

    @classmethod
    def from_json(cls, text: str, source: str = "run record") -> RunRecord:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordError(f"{source}: not JSON ({exc})") from None
        return cls.from_dict(data, source)


def _default_target(job: Any) -> float | None:
    from alpaca_jobs.common import kinds

    kind = kinds.find(job) if isinstance(job, str) else None
    return None if kind is None else kind.default_target_usd


def load_record(run_dir: Path) -> RunRecord | None:
    """The run's record, None while it has none; a RecordError naming the file when that is not
    a record (not UTF-8, not JSON, a field missing or of the wrong type)."""
    path = Path(run_dir) / RECORD_FILE
    data = read_json(path, "move it away to start the run's record afresh", RecordError)
    return None if data is None else RunRecord.from_dict(data, str(path))


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
