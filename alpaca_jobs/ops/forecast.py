"""What a run will cost, before it is launched.

Every run has an upper bound: its time limit x the GPUs it holds x their price (plus CPU
core-hours at their price). A kind may add an expected figure (``Kind.expected_hours``; the train
kind: tokens to train over a throughput measured by an earlier run in the ledger), stated with
its basis. ``cost.max_usd`` refuses a launch whose estimate (expected, else the bound) is above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.record import RunRecord


@dataclass(frozen=True)
class Forecast:
    gpus: int
    price: float
    price_source: str
    bound_hours: float
    bound_usd: float
    expected_hours: float | None = None
    expected_usd: float | None = None
    basis: str = ""
    long_running: bool = False
    cores: int = 0
    core_price: float = 0.0

    @property
    def estimate_usd(self) -> float:
        return self.expected_usd if self.expected_usd is not None else self.bound_usd

    def lines(self) -> list[str]:
        if self.long_running:
            per_hour = self.bound_usd / max(self.bound_hours, 1e-9)
            out = [f"cost: ${per_hour:.2f} per hour while it serves ({self.gpus} GPU(s) x "
                   f"${self.price:.2f}/GPU-h [{self.price_source}]); it runs until cancelled"]
        elif self.gpus:
            out = [f"cost: at most ${self.bound_usd:.2f} ({self.bound_hours:.2f} h time limit x {self.gpus} "
                   f"GPU(s) = {self.bound_hours * self.gpus:.2f} GPU-h at ${self.price:.2f}/GPU-h "
                   f"[{self.price_source}])"]
        else:
            out = [f"cost: at most ${self.bound_usd:.2f} ({self.bound_hours:.2f} h time limit x {self.cores} "
                   f"CPU core(s) = {self.bound_hours * self.cores:.2f} core-h at ${self.core_price:.2f}/core-h; "
                   "no GPUs)"]
        if self.expected_usd is not None:
            used = f"{self.expected_hours * self.gpus:.3f} GPU-h" if self.gpus else \
                f"{self.expected_hours * self.cores:.3f} core-h"
            out.append(f"      expected ${self.expected_usd:.2f} ({used}, {self.expected_hours * 60:.1f} min): "
                       f"{self.basis}")
        elif self.basis:
            out.append(f"      expected: unknown ({self.basis})")
        return out


def forecast(loaded: Any, ledger_records: list[RunRecord], waiting_on: str = "") -> Forecast:
    """The run's cost bound (time limit x resources) and, where its kind can tell one, an
    expected cost; ``waiting_on`` (inputs an earlier run has still to make) rules that out."""
    from alpaca_jobs.ops.prices import gpu_price

    spec, res = loaded.spec, loaded.spec.resources
    gpus = res.nodes * res.gpus_per_node
    price = gpu_price(res.gpu_type if gpus else None, spec.cost.gpu_hour_usd)
    per_hour = gpus * price.usd_per_gpu_hour + res.world_size * res.cpus_per_process * spec.cost.cpu_core_hour_usd
    hours = res.time_limit_minutes / 60
    kind = kinds.get(spec.job)
    expected, basis = None, ""
    if kind.expected_hours is not None:  # an earlier run's output is not there to measure yet
        expected, basis = (None, waiting_on) if waiting_on else kind.expected_hours(loaded, ledger_records)
    return Forecast(gpus, price.usd_per_gpu_hour, price.source, hours, hours * per_hour,
                    expected, None if expected is None else min(expected, hours) * per_hour, basis,
                    kind.long_running, res.world_size * res.cpus_per_process, spec.cost.cpu_core_hour_usd)


def ledger_records(runs_dir: Path) -> list[RunRecord]:
    """The ledger's records for an estimate; an unreadable ledger gives no estimate, not an error."""
    from alpaca_jobs.ops import ledger

    try:
        return ledger.records_in(runs_dir)
    except UserError:
        return []


def check_budget(loaded: Any, fc: Forecast, over_budget: bool, where: str | None = None) -> None:
    """Refuse a run whose estimate is above its ``cost.max_usd`` (unless ``over_budget``);
    ``where`` names it in the error (default: its spec file)."""
    cap = loaded.spec.cost.max_usd
    if cap is not None and fc.estimate_usd > cap and not over_budget:
        what = "expected" if fc.expected_usd is not None else "at most (time limit)"
        raise UserError(f"{where or loaded.path}: cost.max_usd is ${cap:.2f} but this run would cost {what} "
                        f"${fc.estimate_usd:.2f}; lower resources.time_limit or the work, raise "
                        "cost.max_usd, or pass --over-budget")
