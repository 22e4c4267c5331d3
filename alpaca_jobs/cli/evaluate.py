"""Commands of the evaluate job, registered by ``alpaca_jobs.cli``:

    alpaca-jobs evaluate [SPEC] [--set F=V]... [--run-dir DIR]   run it here, print the report
    alpaca-jobs rate RUN_DIR [--port 8090]                        people rate the pairs
    alpaca-jobs evaluate-report RUN_DIR                           rebuild the report (+ ratings)

``evaluate`` runs the job in this process (``submit`` runs the same job on a backend). Given
an existing run dir it resumes: only missing outputs and judgments are requested.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from alpaca_jobs.cli.here import over_budget_option, run_here
from alpaca_jobs.common.errors import UserError

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord


@click.command("evaluate")
@click.argument("spec", default="jobs/evaluate-local.yaml", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="override one spec field, e.g. --set evaluate.max_instructions=5 (repeatable)")
@click.option("--instructions", help="user-oriented JSONL (sets evaluate.instructions)")
@click.option("--max-instructions", type=click.IntRange(1), help="evaluate only the first N items")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="where results go; an earlier evaluation's dir resumes it (default: a new run)")
@over_budget_option
def evaluate_command(spec: str, overrides: tuple[str, ...], instructions: str | None,
                     max_instructions: int | None, run_dir: str | None, over_budget: bool) -> None:
    """Compare two systems on an instruction set, here and now; print the report."""
    from alpaca_jobs.backends.base import new_run_id
    from alpaca_jobs.spec import load_spec

    extra = [*overrides]
    if instructions:
        extra.append(f"evaluate.instructions={instructions}")
    if max_instructions:
        extra.append(f"evaluate.max_instructions={max_instructions}")
    loaded = load_spec(spec, extra)
    if loaded.spec.job != "evaluate":
        raise UserError(f"{spec} is a {loaded.spec.job} job; give an evaluate spec (jobs/evaluate-local.yaml)")
    path = Path(run_dir) if run_dir else Path(loaded.spec.runs_dir) / new_run_id(loaded.spec.name)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rec = run_here(loaded, path.resolve(), over_budget)
    _print(path, rec)


@click.command("evaluate-report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report_command(run_dir: str) -> None:
    """Rebuild RUN_DIR's report from its outputs, judgments and people's ratings (no requests)."""
    from alpaca_jobs.evaluate import rundir
    from alpaca_jobs.evaluate.worker import write_report

    write_report(rundir.load(run_dir))
    _print(Path(run_dir), None)


@click.command("rate")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
def rate_command(run_dir: str, host: str, port: int) -> None:
    """Serve the blind rating page for RUN_DIR's pairs; several people can rate at once."""
    import uvicorn

    from alpaca_jobs.evaluate import collect, rundir
    from alpaca_jobs.evaluate.human import create_rating_app
    from alpaca_jobs.evaluate.ratings import Ratings

    run = rundir.load(run_dir)
    outputs = collect.read_outputs(run.run_dir / rundir.OUTPUTS)
    store = Ratings(run.ratings_path)
    app = create_rating_app(run.items, outputs, run.names, store, run.cfg.seed)
    click.echo(f"rating page: http://{host}:{port}/  (ratings: {run.ratings_path}; "
               f"then `alpaca-jobs evaluate-report {run_dir}`)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _print(run_dir: Path, rec: RunRecord | None) -> None:
    import json

    from alpaca_jobs.evaluate.report import format_text

    click.echo(format_text(json.loads((run_dir / "report.json").read_text())))
    if rec is not None:
        api = rec.api or {}
        click.echo(f"  API: {api.get('requests', 0)} requests in all ({api.get('this_attempt', {}).get('requests', 0)}"
                   f" this time), ${api.get('cost_usd', 0):.4f}; wall {rec.wall_seconds:.1f} s")
    click.echo(f"  files: {run_dir}/report.html, report.png, report.json")
