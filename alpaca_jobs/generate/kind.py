"""The generate kind: self-instruct data from seed tasks through an OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.kinds import Kind, Visible

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord


def preflight(loaded: Any, visible: Visible) -> None:
    from alpaca_jobs.generate.seeds import load_seeds

    cfg = loaded.spec.generate
    if visible(cfg.seeds):
        load_seeds(cfg.seeds)  # a malformed seed file fails here, naming the line
    if cfg.prompt_file and visible(cfg.prompt_file) and not Path(cfg.prompt_file).is_file():
        raise UserError(f"{loaded.path}: generate.prompt_file {cfg.prompt_file}: no such file")


def outputs(run_dir: Path) -> dict[str, str]:
    return {"generate.data": str(run_dir / "alpaca_data.json")}


def report_rows(rec: RunRecord) -> list[tuple[str, str]]:
    from alpaca_jobs.ops.present import generate_rows

    return generate_rows(rec)


def _summary(rec: RunRecord) -> tuple[str, str] | None:
    from alpaca_jobs.ops.present import data_line

    return data_line(rec)


KIND = Kind(name="generate", body="alpaca_jobs.generate.worker:generate_body",
            config="alpaca_jobs.generate.config:GenerateConfig",
            summary=_summary, preflight=preflight, outputs=outputs, report_rows=report_rows)
