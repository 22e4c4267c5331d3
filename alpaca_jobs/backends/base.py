"""The backend interface: one spec in, a rendered submission out, then a job handle.

``render`` is pure (what ``--dry-run`` prints is exactly what ``submit`` sends); side effects
live in ``submit``. Handles are saved as ``<run_dir>/handle.json`` so that ``status``,
``logs`` and ``cancel`` work from any later shell.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.backends.states import State
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.files import atomic_write
from alpaca_jobs.common.statefiles import as_type, read_json
from alpaca_jobs.spec import LoadedSpec

HANDLE_FILE = "handle.json"


class HandleError(UserError):
    """A ``handle.json`` that cannot be read back: which file, which field, what to do."""


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """A run id names a directory under the runs dir, a Slurm job and Kubernetes objects:
    letters, digits, '.', '_' and '-' only, so it can never point elsewhere."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise UserError(f"--run-id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', starting "
                        "with a letter or digit (no '/', no '..')")
    return run_id


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Submission:
    """What every backend's render gives: the run, and ``text``, exactly what would be
    submitted (for --dry-run). Each backend's subclass carries what its submit sends."""

    backend: str
    run_id: str
    run_dir: Path
    text: str


@dataclass(frozen=True)
class PayloadSubmission(Submission):
    """A submission whose workers receive the payload as data (local: submitit's pickle;
    Slurm: the run dir's payload.json)."""

    payload: dict[str, Any]


@dataclass
class JobHandle:
    run_id: str
    backend: str
    job_id: str
    run_dir: str
    logs: list[str] = field(default_factory=list)  # rank 0's stdout and stderr files, if any
    submitted_at: str = ""
    ranks: int = 1  # worker processes (their logs are --rank 0..ranks-1)
    nodes: int = 1  # nodes they run on (ranks are numbered node by node: --node i)

    def save(self) -> None:
        atomic_write(Path(self.run_dir) / HANDLE_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, run_dir: Path) -> JobHandle:
        """The handle ``submit`` saved in ``run_dir``; a HandleError naming the file (and the
        field) when there is none or it is damaged."""
        path = Path(run_dir) / HANDLE_FILE
        fix = (f"it is what submit wrote about this job: restore it, or move {Path(run_dir).name} away "
               "(a job still running is not stopped by that: cancel it on the cluster by its id)")
        data = read_json(path, fix, HandleError)
        if data is None:
            raise HandleError(f"{path}: no such file; this run was never submitted from here")
        return as_type(cls, data, str(path), HandleError, "a job handle (a JSON object)", fix,
                       nonempty=("run_id", "backend", "job_id", "run_dir"))




@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers ask instead of branching on its name."""

    dependencies: bool = False  # the scheduler holds a job until the ones named in ``after`` complete
    reachable: bool = False  # a service it runs can be reached from this machine (its URL works here)
    attached: bool = False  # jobs run as children of this session: followed by default, stopped with it


class Backend(ABC):
    name: str
    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> Submission:
        """The submission, exactly as ``submit`` sends it. ``after``: job ids this run waits on
        (backends with ``capabilities.dependencies`` only)."""

    def _no_dependencies(self, after: list[str] | None) -> None:
        if after:
            raise UserError(f"the {self.name} backend cannot hold a job until others complete; "
                            "submit the stages one after another")

    @abstractmethod
    def submit(self, sub: Submission) -> JobHandle: ...

    def submit_many(self, subs: list[Submission]) -> list[JobHandle]:
        """Several runs at once (a sweep); backends with job arrays override this."""
        return [self.submit(sub) for sub in subs]

    @abstractmethod
    def status(self, handle: JobHandle) -> State:
        """The run's state, from the scheduler's words through the backend's table (states.py)."""

    def log_paths(self, handle: JobHandle) -> dict[int, list[Path]]:
        """Each rank's log files (stdout, stderr), for workers that log to files named like
        rank 0's (``*_0_log.*``); empty where logs come from elsewhere."""
        import re

        found: dict[int, list[Path]] = {}
        for rank0 in handle.logs:
            head, sep, tail = rank0.rpartition("_0_log")
            if not sep:
                continue
            for path in sorted(Path(head).parent.glob(Path(head).name + "_*_log" + tail)):
                m = re.fullmatch(re.escape(Path(head).name) + r"_(\d+)_log" + re.escape(tail), path.name)
                if m:
                    found.setdefault(int(m.group(1)), []).append(path)
        return found

    def logs(self, handle: JobHandle, rank: int | None = 0) -> str:
        """A worker's stdout then stderr, as they stand (``rank`` None: every worker's)."""
        paths = self.log_paths(handle)
        ranks = sorted(paths) if rank is None else [rank]
        return "".join(p.read_text(errors="replace") for r in ranks for p in paths.get(r, []) if p.is_file())

    def follow(self, handle: JobHandle):
        """For backends that stream logs (None here: followers read ``log_paths`` by offset):
        an iterator of log text that ends when the worker's output ends."""
        return None

    @abstractmethod
    def cancel(self, handle: JobHandle) -> str | None:
        """Stop the job (its workers checkpoint first); what was done, in a line."""

    def preflight(self, loaded: LoadedSpec) -> None:
        """Checks that can fail before anything is submitted: the inputs, then (backends add
        them) whether this machine can submit at all."""
        self.check_inputs(loaded)

    def check_inputs(self, loaded: LoadedSpec) -> None:
        """The spec's files that are visible from here (data, base model, seeds...): malformed
        ones fail now, also in a dry run. Absolute paths that do not exist here are taken to be
        on the cluster's storage."""
        from alpaca_jobs.common import kinds

        kinds.preflight(loaded, lambda path: not path.startswith("/") or Path(path).exists())

    def render_plain(self, loaded: LoadedSpec, spec_arg: str) -> str:
        """The spec as files for the cluster's own tools (``alpaca-jobs render``)."""
        raise UserError(f"the {self.name} backend has nothing to render for plain cluster tools")

    def finalize(self, handle: JobHandle) -> None:  # noqa: B027 - optional hook
        """After the job ended: add what only the scheduler knows to the run record."""
