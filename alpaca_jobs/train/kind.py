"""The train kind: fine-tune a base model on instruction data, one process per GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.kinds import Kind, Visible

STANFORD_TARGET_USD = 100.0  # Alpaca: "< $100" on 8x A100-80GB for 3 hours


def preflight(loaded: Any, visible: Visible) -> None:
    from alpaca_jobs.common.presets import check_base_model

    spec = loaded.spec
    if visible(spec.train.base_model):
        check_base_model(spec.train.base_model)
    if visible(spec.train.data):
        from alpaca_jobs.train.data import DataStats, clean_records, read_records

        # Malformed data fails here, not in a worker; so does data with nothing to train on.
        stats = DataStats()
        if not clean_records(read_records(spec.train.data), stats):
            raise UserError(f"{spec.train.data}: no usable examples (train.data): {stats.records_read} "
                            f"records, {stats.skipped_empty_output} with an empty output, "
                            f"{stats.skipped_duplicate} duplicates")


def outputs(run_dir: Path) -> dict[str, str]:
    return {"train.model": str(run_dir / "model")}


def report_rows(rec: dict[str, Any]) -> list[tuple[str, str]]:
    from alpaca_jobs.ops.present import train_rows

    return train_rows(rec)


KIND = Kind(name="train", body="alpaca_jobs.train.worker:train_body", per_gpu=True,
            node_imports="alpaca_jobs, submitit, torch",
            preflight=preflight, outputs=outputs, report_rows=report_rows,
            default_target_usd=STANFORD_TARGET_USD)
