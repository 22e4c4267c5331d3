"""The evaluate kind: blind pairwise comparison of two systems (LLM judge and/or people)."""

from __future__ import annotations

from alpaca_jobs.common.kinds import Kind

KIND = Kind(name="evaluate", body="alpaca_jobs.evaluate.worker:evaluate_body", stop="interrupt",
            preflight=lambda loaded, visible: _preflight(loaded, visible))


def _preflight(loaded, visible) -> None:
    from alpaca_jobs.evaluate.worker import preflight

    preflight(loaded, visible)
