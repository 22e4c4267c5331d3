"""The train kind: fine-tune a base model on instruction data, one process per GPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.kinds import Kind, Visible

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord

STANFORD_TARGET_USD = 100.0  # Alpaca: "< $100" on 8x A100-80GB for 3 hours
CHARS_PER_TOKEN = 4.0  # assumed before launch (no tokenizer yet): English BPE text averages ~4
TEMPLATE_CHARS = 150  # the Alpaca prompt's preamble and section markers, per example


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


def expected_hours(loaded: Any, records: list[RunRecord]) -> tuple[float | None, str]:
    """Tokens to train (from the data, at an assumed characters-per-token) over the throughput
    of the latest completed training run on the same hardware in the ledger, plus that run's
    start-up and checkpoint time."""
    spec, cfg = loaded.spec, loaded.spec.train
    if not Path(cfg.data).is_file():
        return None, f"train.data {cfg.data} is not readable from here"
    from alpaca_jobs.train.data import DataStats, clean_records, read_records

    examples = clean_records(read_records(cfg.data), DataStats())
    per_example = sum(len(r.instruction) + len(r.input) + len(r.output) + TEMPLATE_CHARS
                      for r in examples) / CHARS_PER_TOKEN / max(1, len(examples))
    n = len(examples) * cfg.epochs
    if cfg.max_steps:
        n = min(n, cfg.max_steps * cfg.global_batch_size)
    tokens = n * per_example
    same = [r for r in records if r.job == "train" and r.status == "completed"
            and r.gpu_type == spec.resources.gpu_type and r.processes == spec.resources.world_size
            and r.tokens_per_second]
    if not same:
        return None, ("no completed training run on this hardware in the ledger yet to take a "
                      "throughput from; the bound above holds")
    last = same[-1]
    overhead = max(0.0, last.wall_seconds / max(1, last.attempts) - last.train_loop_seconds)
    hours = (tokens / last.tokens_per_second + overhead) / 3600
    return hours, (f"~{tokens:,.0f} tokens ({n} examples, {CHARS_PER_TOKEN:g} characters per token "
                   f"assumed) at {last.tokens_per_second:,.0f} tokens/s measured by run "
                   f"{last.run_id}, plus its {overhead:.0f} s of start-up and checkpoints")


def outputs(run_dir: Path) -> dict[str, str]:
    return {"train.model": str(run_dir / "model")}


def report_rows(rec: RunRecord) -> list[tuple[str, str]]:
    from alpaca_jobs.ops.present import train_rows

    return train_rows(rec)


def _summary(rec: RunRecord) -> tuple[str, str] | None:
    from alpaca_jobs.ops.present import training_line

    return training_line(rec)


KIND = Kind(name="train", body="alpaca_jobs.train.worker:train_body",
            config="alpaca_jobs.train.config:TrainConfig", per_gpu=True,
            node_imports="alpaca_jobs, submitit, torch",
            summary=_summary, preflight=preflight, outputs=outputs, report_rows=report_rows, expected_hours=expected_hours,
            default_target_usd=STANFORD_TARGET_USD)
