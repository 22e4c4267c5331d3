"""Finding, following and stopping runs: ``list``, ``status``, ``logs [-f]``, ``cancel``.

Runs are found in the ledger (every finished run, on any backend) and in the runs directory
(each submitted run's ``handle.json``, so queued and running ones show too). Logs are followed
by offset, per file and per rank: stdout and stderr never garble each other.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import click

from alpaca_jobs.backends.states import State, is_active, record_state
from alpaca_jobs.common.errors import UserError

RUNS_DIR_ENV = "ALPACA_JOBS_RUNS_DIR"
runs_dir_option = click.option("--runs-dir", help=f"where runs live (env {RUNS_DIR_ENV}; default ./runs)")


def runs_dir_of(option: str | None) -> Path:
    return Path(option or os.environ.get(RUNS_DIR_ENV, "runs"))


def find_run(run: str, runs_dir: str | None):
    """(backend, handle) of RUN: a run id under the runs dir, or a run directory."""
    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.backends.base import HANDLE_FILE, JobHandle

    candidates = [Path(run)] if Path(run).is_dir() else []
    candidates.append(runs_dir_of(runs_dir) / run)
    for path in candidates:
        if (path / HANDLE_FILE).is_file():
            handle = JobHandle.load(path)
            return get_backend(handle.backend), handle
    raise UserError(f"no run {run!r} under {candidates[-1].parent}; pass --runs-dir or a run dir path "
                    "(`alpaca-jobs list` shows the runs)")


# --- list ------------------------------------------------------------------------------


@dataclass
class RunRow:
    run_id: str
    kind: str
    cluster: str
    state: str
    started: str
    gpu_hours: float | None = None
    cost_usd: float | None = None
    why: str = ""  # why the state is UNKNOWN, in full: printed under the table, not in it


def collect_runs(runs_dir: Path, live: bool = True) -> list[RunRow]:
    """Ledger records, then submitted runs with no record yet (their state asked of the backend
    when ``live``), newest first."""
    rows: dict[str, RunRow] = {}
    from alpaca_jobs.ops.ledger import records_in

    for rec in records_in(runs_dir):
        rows[rec.run_id] = RunRow(rec.run_id, rec.job, rec.backend, rec.status.upper(), rec.started_at,
                                  rec.gpu_hours, rec.total_cost_usd)
    for handle_file in sorted(runs_dir.glob("*/handle.json")) if runs_dir.is_dir() else []:
        row = _row_of_handle(handle_file.parent, live)
        if row is not None and (row.run_id not in rows or is_active(row.state)):
            rows[row.run_id] = row
    return sorted(rows.values(), key=lambda r: r.started, reverse=True)


def _row_of_handle(run_dir: Path, live: bool) -> RunRow | None:
    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.backends.base import JobHandle
    from alpaca_jobs.ops.record import load_record

    try:
        handle = JobHandle.load(run_dir)
    except UserError as exc:  # listed, with why, not skipped: a damaged run is still a run
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run_dir.stat().st_mtime))
        return RunRow(run_dir.name, _kind_of(run_dir), "?", str(State.UNKNOWN), started, why=str(exc))
    try:
        rec = load_record(run_dir)
    except UserError as exc:  # listed, with why its record is unreadable, not skipped
        return RunRow(handle.run_id, _kind_of(run_dir), handle.backend, str(State.UNKNOWN),
                      handle.submitted_at, why=str(exc))
    kind = rec.job if rec else _kind_of(run_dir)
    state = str(record_state(rec.status) if rec and rec.status != "running" else State.SUBMITTED)
    why = ""
    if live and (rec is None or rec.status == "running"):
        asked, why = ask_state(get_backend(handle.backend), handle)
        state = str(asked)
    if rec is None:
        return RunRow(handle.run_id, kind, handle.backend, state, handle.submitted_at, why=why)
    return RunRow(handle.run_id, kind, handle.backend, state, rec.started_at, rec.gpu_hours, rec.total_cost_usd,
                  why)


def _kind_of(run_dir: Path) -> str:
    import json

    for name in ("payload.json", "submitit/payload.json"):
        try:
            return json.loads((run_dir / name).read_text())["spec"]["job"]
        except (OSError, ValueError, KeyError):
            continue
    return "?"


def age(iso: str, now: float | None = None) -> str:
    """'3m', '2h', '5d' since an ISO-8601 UTC time ('-' when unknown)."""
    ago = _seconds_ago(iso, now)
    if ago is None:
        return "-"
    secs = max(0, int(ago))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _since_seconds(text: str) -> float:
    import re

    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not m:
        raise UserError(f"--since {text!r}: use a number and a unit, e.g. 30m, 12h, 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def print_runs(rows: list[RunRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col, just in (("RUN", "left"), ("KIND", "left"), ("CLUSTER", "left"), ("STATE", "left"),
                      ("AGE", "right"), ("GPU-H", "right"), ("$", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    for r in rows:
        table.add_row(r.run_id, r.kind, r.cluster, r.state, age(r.started),
                      "-" if r.gpu_hours is None else f"{r.gpu_hours:.3f}",
                      "-" if r.cost_usd is None else f"{r.cost_usd:.2f}")
    Console(width=max(100, len(max((r.run_id for r in rows), key=len, default="")) + 70),
            soft_wrap=True).print(table)
    for r in rows:
        if r.why:
            click.echo(f"{r.run_id}: state unknown: {r.why}", err=True)


@click.command("list")
@runs_dir_option
@click.option("--kind", help="only runs of this kind (train, generate, ...)")
@click.option("--cluster", help="only runs on this backend (local, slurm, k8s)")
@click.option("--state", help="only runs in this state (RUNNING, COMPLETED, FAILED, ...)")
@click.option("--since", help="only runs started within this long, e.g. 12h, 7d")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
def list_runs(runs_dir: str | None, kind: str | None, cluster: str | None, state: str | None,
              since: str | None, limit: int) -> None:
    """Runs on every backend, newest first: id, kind, cluster, state, age, GPU-hours, $."""
    rows = collect_runs(runs_dir_of(runs_dir))
    if since:
        horizon = _since_seconds(since)
        rows = [r for r in rows if (ago := _seconds_ago(r.started)) is not None and ago <= horizon]
    rows = [r for r in rows if (not kind or r.kind == kind) and (not cluster or r.cluster == cluster)
            and (not state or r.state.split()[0] == state.upper())][:limit]
    if not rows:
        click.echo(f"no runs under {runs_dir_of(runs_dir)}" + (" matching the filters" if
                                                             kind or cluster or state or since else ""))
        return
    print_runs(rows)


def _seconds_ago(iso: str, now: float | None = None) -> float | None:
    from calendar import timegm

    try:
        return (now or time.time()) - timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None


# --- logs ------------------------------------------------------------------------------


class Tail:
    """New complete lines of files, each read from where the last read stopped."""

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, str] = {}

    def read(self, path: Path) -> list[str]:
        try:
            size = path.stat().st_size
        except OSError:
            return []
        start = self.offsets.get(path, 0)
        if size < start:  # replaced or truncated: start again
            start, self.partial[path] = 0, ""
        if size == start:
            return []
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(size - start)
        self.offsets[path] = size
        lines = (self.partial.pop(path, "") + data.decode(errors="replace")).split("\n")
        if lines[-1]:
            self.partial[path] = lines[-1]
        return lines[:-1]

    def rest(self, path: Path) -> list[str]:
        tail = self.partial.pop(path, "")
        return [tail] if tail else []


def check_rank(handle, rank: int | None) -> None:
    if rank is not None and not 0 <= rank < handle.ranks:
        last = f"0-{handle.ranks - 1}" if handle.ranks > 1 else "0"
        raise UserError(f"run {handle.run_id} has {handle.ranks} worker process(es): --rank {last} "
                        "(or --rank all)")


def node_ranks(handle, node: int) -> list[int]:
    """The ranks node ``node`` runs (ranks are numbered node by node)."""
    nodes = getattr(handle, "nodes", 1)
    if not 0 <= node < nodes:
        last = f"0-{nodes - 1}" if nodes > 1 else "0"
        raise UserError(f"run {handle.run_id} runs on {nodes} node(s): --node {last}")
    per = max(1, handle.ranks // nodes)
    return list(range(node * per, (node + 1) * per))


def follow_logs(backend, handle, rank: int | list[int] | None, follow: bool, echo=click.echo,
                on_poll=None) -> str:
    """Print rank ``rank``'s log (a list: those ranks'; None: every rank's; lines prefixed
    when more than one) and, with ``follow``, go on until the job ends (``on_poll`` runs after
    each look). Returns the job's last state."""
    ranks = [rank] if isinstance(rank, int) else rank
    for r in ranks or []:
        check_rank(handle, r)
    tail, shown, prefix = Tail(), 0, (ranks is None and handle.ranks > 1) or len(ranks or []) > 1
    stream = backend.follow(handle) if follow and not backend.log_paths(handle) else None
    if stream is not None:  # a backend that streams (Kubernetes): print as it comes
        for chunk in stream:
            echo(chunk, nl=False)
            shown += len(chunk)
            if on_poll is not None:
                on_poll()
    while True:
        state = backend.status(handle) if follow else "DONE"
        paths = backend.log_paths(handle)
        if paths:
            for r in sorted(paths) if ranks is None else ranks:
                for path in paths.get(r, []):
                    for line in tail.read(path) + ([] if is_active(state) else tail.rest(path)):
                        echo(f"[rank {r}] {line}" if prefix else line)
        else:  # a backend that serves logs as text (Kubernetes: a node's pod log holds its ranks)
            text = backend.logs(handle, None if ranks is None else ranks[0])
            if len(text) > shown:
                echo(text[shown:], nl=False)
                shown = len(text)
        if on_poll is not None:
            on_poll()
        if not is_active(state):
            return state
        time.sleep(0.5)


@click.command()
@click.argument("run")
@runs_dir_option
@click.option("--rank", default="0", show_default=True, help="which worker's log: a rank, or 'all'")
@click.option("--node", type=int, default=None, help="every rank of one node (0, 1, ...) of a multi-node run")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the run ends (Ctrl-C stops following)")
def logs(run: str, runs_dir: str | None, rank: str, node: int | None, follow: bool) -> None:
    """Print RUN's worker log (stdout and stderr), one rank's, one node's or all of them; -f follows it."""
    backend, handle = find_run(run, runs_dir)
    if rank != "all" and not rank.isdigit():
        raise UserError(f"--rank {rank!r}: a worker's rank (0, 1, ...) or 'all'")
    which = node_ranks(handle, node) if node is not None else None if rank == "all" else int(rank)
    try:
        follow_logs(backend, handle, which, follow)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the run goes on (alpaca-jobs cancel {handle.run_id} stops it)")


# --- status, cancel --------------------------------------------------------------------


@click.command()
@click.argument("run", required=False)
@runs_dir_option
def status(run: str | None, runs_dir: str | None) -> None:
    """State of RUN (an id or a run directory) and its report; without RUN, the recent runs."""
    from alpaca_jobs.ops.present import format_report
    from alpaca_jobs.ops.record import load_record

    if run is None:
        rows = collect_runs(runs_dir_of(runs_dir))[:10]
        if not rows:
            click.echo(f"no runs under {runs_dir_of(runs_dir)}")
            return
        print_runs(rows)
        return
    pipe_dir = Path(run) if Path(run, "pipeline.json").is_file() else runs_dir_of(runs_dir) / run
    if (pipe_dir / "pipeline.json").is_file():
        _pipeline_status(pipe_dir)
        return
    backend, handle = find_run(run, runs_dir)
    state, why = ask_state(backend, handle)
    click.echo(f"{handle.run_id}: {state} ({handle.backend} job {handle.job_id})")
    if why:
        click.echo(f"{handle.run_id}: {why}", err=True)
    try:
        backend.finalize(handle)  # adds what only the scheduler knows to the record, once it ended
        rec = load_record(Path(handle.run_dir))
    except UserError as exc:  # the state above still stands; say why there is no report
        click.echo(f"{handle.run_id}: no report: {exc}", err=True)
        return
    if rec:
        click.echo(format_report(rec))


def ask_state(backend, handle) -> tuple[State, str]:
    """The job's state as its backend tells it and ''; UNKNOWN and why when it cannot be asked."""
    import json

    try:
        return backend.status(handle), ""
    except (UserError, OSError, json.JSONDecodeError) as exc:
        return State.UNKNOWN, f"{handle.backend} could not be asked: {exc}"


def _pipeline_status(pipe_dir: Path) -> None:
    from alpaca_jobs.pipeline.state import Pipeline, stage_state
    from alpaca_jobs.pipeline.summary import collect, format_summary

    pipe = Pipeline.load(pipe_dir)
    for stage in pipe.stages.values():
        stage.status = stage_state(stage) if stage.job_id else stage.status
    pipe.save()
    click.echo(format_summary(collect(pipe_dir)))


@click.command()
@click.argument("run")
@runs_dir_option
def cancel(run: str, runs_dir: str | None) -> None:
    """Stop RUN: workers checkpoint first; `submit --run-id RUN` resumes it. Says what it did."""
    backend, handle = find_run(run, runs_dir)
    state = backend.status(handle)
    if state is State.DELETED:
        click.echo(f"{handle.run_id}: gone (job {handle.job_id} no longer exists on {handle.backend}); "
                   "nothing to cancel")
        return
    if not state.active:
        click.echo(f"{handle.run_id} already ended ({state}); nothing to cancel")
        return
    said = backend.cancel(handle)
    click.echo(said or f"cancel sent to {handle.run_id} ({handle.backend} job {handle.job_id})")
