"""The evaluate kind: blind pairwise comparison of two systems (LLM judge and/or people)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alpaca_jobs.common.kinds import Kind

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord


def _summary(rec: RunRecord) -> tuple[str, str] | None:
    from alpaca_jobs.ops.present import evaluation_line

    return evaluation_line(rec)


KIND = Kind(name="evaluate", body="alpaca_jobs.evaluate.worker:evaluate_body",
            config="alpaca_jobs.evaluate.config:EvaluateConfig", stop="interrupt",
            summary=_summary, preflight=lambda loaded, visible: _preflight(loaded, visible))


def _preflight(loaded, visible) -> None:
    from alpaca_jobs.evaluate.worker import preflight

    preflight(loaded, visible)
