"""Running a job in this process (``alpaca-jobs generate``, ``alpaca-jobs evaluate``): one
runner for both, ``submission.run_here``, so they check, cost and record alike."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord


def over_budget_option(f):
    return click.option("--over-budget", is_flag=True,
                        help="run even if the estimate exceeds cost.max_usd")(f)


def load_kind(spec_path: str, overrides: tuple[str, ...], job: str) -> Any:
    """The spec at ``spec_path`` (with ``overrides``), refused unless it is a ``job`` spec."""
    from alpaca_jobs.common.errors import UserError
    from alpaca_jobs.spec import load_spec

    loaded = load_spec(spec_path, overrides)
    if loaded.spec.job != job:
        raise UserError(f"{spec_path}: job is {loaded.spec.job!r}; this command runs {job} specs")
    return loaded


def run_here(loaded: Any, run_dir: Path, over_budget: bool) -> RunRecord | None:
    """Run ``loaded`` here in ``run_dir`` (an existing one resumes), saying on stderr where it
    runs and what it will cost before it starts; returns its run record."""
    from alpaca_jobs import submission

    def said(fc) -> None:
        for line in [f"run {run_dir.name}: {run_dir}", *fc.lines()]:
            click.echo(line, err=True)

    return submission.run_here(loaded, run_dir, over_budget, on_forecast=said)
