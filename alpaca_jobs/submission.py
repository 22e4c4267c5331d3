"""The one way a run is launched: render -> preflight -> cost forecast and budget check -> submit.

Every caller goes through here, so a rule such as ``cost.max_usd`` holds for all of them:
``alpaca-jobs submit`` (one run or a sweep), each stage of ``alpaca-jobs pipeline`` and the
teacher it starts, and the commands that run a job in this process (``run_here``: ``generate``,
``evaluate``). Nothing here prints; callers get typed results and say what they mean to.

A pipeline costs all its stages before it starts any (``cost``): their inputs do not exist yet,
so that step renders and costs without checking inputs; each stage then goes through ``submit``
like any run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alpaca_jobs.backends.base import Backend, JobHandle, Submission
from alpaca_jobs.ops.forecast import Forecast, check_budget, forecast, ledger_records
from alpaca_jobs.spec import LoadedSpec

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord

IN_PROCESS = "in-process"  # the backend a run records when it ran in the command's own process


@dataclass(frozen=True)
class Run:
    """One run to launch: its spec and id, and how a refusal names it (default: its spec file).
    ``waiting_on`` says which of its inputs earlier runs have still to make (a pipeline's later
    stages): its cost is then bounded by its time limit, with no expected figure yet."""

    loaded: LoadedSpec
    run_id: str
    label: str = ""
    waiting_on: str = ""


@dataclass(frozen=True)
class Options:
    dry_run: bool = False  # render, check and cost; send nothing (inputs checked as far as a dry run can)
    over_budget: bool = False  # send even where the estimate exceeds cost.max_usd
    after: tuple[str, ...] = ()  # job ids the runs wait on (backends with capabilities.dependencies)


@dataclass(frozen=True)
class Planned:
    """A run rendered, checked and costed: what will be (or, in a dry run, would be) sent."""

    run: Run
    submission: Submission
    forecast: Forecast
    resuming: bool  # its run dir held a checkpoint when it was planned: the run goes on from there


@dataclass(frozen=True)
class Result:
    planned: list[Planned]
    handles: list[JobHandle]  # one per planned run, in order; empty for a dry run


def submit(backend: Backend, runs: Sequence[Run], options: Options = Options()) -> Result:
    """``plan`` the runs, then (not in a dry run) ``send`` them: any refusal comes before
    anything is sent."""
    planned = plan(backend, runs, options)
    return Result(planned, [] if options.dry_run else send(backend, planned))


def plan(backend: Backend, runs: Sequence[Run], options: Options = Options()) -> list[Planned]:
    """Render every run, check its inputs, cost it and hold it to ``cost.max_usd``."""
    subs = _render(backend, runs, options)
    for run in runs:  # a malformed data file fails a dry run too; a submission checks more
        (backend.check_inputs if options.dry_run else backend.preflight)(run.loaded)
    return _costed(runs, subs, options)


def send(backend: Backend, planned: Sequence[Planned]) -> list[JobHandle]:
    """Submit planned runs together (a sweep goes as one job array where the backend has them)."""
    return backend.submit_many([p.submission for p in planned])


def cost(backend: Backend, runs: Sequence[Run], options: Options = Options()) -> list[Planned]:
    """Render and cost runs whose inputs earlier runs will make (a pipeline's stages, before
    the first starts), holding each to ``cost.max_usd``; nothing is checked on disk or sent."""
    return _costed(runs, _render(backend, runs, options), options)


def run_here(loaded: LoadedSpec, run_dir: Path, over_budget: bool = False,
             on_forecast: Callable[[Forecast], None] = lambda fc: None) -> RunRecord | None:
    """Run a job in this process (no scheduler): the same checks and budget as a submission
    (``on_forecast`` hears the cost before the job starts), the same payload, run directory and
    run record; the same run dir resumes. Returns the run record once the job has ended."""
    from alpaca_jobs import runtime
    from alpaca_jobs.common import kinds
    from alpaca_jobs.job import Payload

    kinds.preflight(loaded)
    on_forecast(_cost_one(Run(loaded, run_dir.name), ledger_records(run_dir.parent), over_budget))
    return runtime.run_payload(Payload.build(loaded, run_dir.name, IN_PROCESS, run_dir).to_dict())


def _render(backend: Backend, runs: Sequence[Run], options: Options) -> list[Submission]:
    after = list(options.after) or None
    return [backend.render(run.loaded, run.run_id, after=after) for run in runs]


def _costed(runs: Sequence[Run], subs: list[Submission], options: Options) -> list[Planned]:
    ledgers: dict[Path, list[RunRecord]] = {}  # the ledger of each runs dir, read once
    planned = []
    for run, sub in zip(runs, subs, strict=True):
        runs_dir = Path(sub.run_dir).parent
        if runs_dir not in ledgers:
            ledgers[runs_dir] = ledger_records(runs_dir)
        fc = _cost_one(run, ledgers[runs_dir], options.over_budget)
        planned.append(Planned(run, sub, fc, (Path(sub.run_dir) / "checkpoints" / "latest").is_file()))
    return planned


def _cost_one(run: Run, records: list[RunRecord], over_budget: bool) -> Forecast:
    fc = forecast(run.loaded, records, run.waiting_on)
    check_budget(run.loaded, fc, over_budget, where=run.label or None)
    return fc
