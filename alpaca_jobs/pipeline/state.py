"""What a pipeline keeps about itself: ``<runs dir>/<pipeline id>/pipeline.json``, one entry per
stage (its run, backend, job id and last known state), the values stages passed on, the checks.

Written whole on every change (``atomic_write``); read back as a ``Pipeline``, every field
checked, so `status` on a damaged file names it and the field instead of a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError

PIPELINE_FILE = "pipeline.json"


class PipelineFileError(UserError):
    """A ``pipeline.json`` that cannot be read back."""


@dataclass
class StageRun:
    stage: str
    run_id: str
    run_dir: str
    backend: str
    job_id: str = ""
    status: str = "PENDING"
    reused: bool = False
    url: str | None = None


@dataclass
class _Body:
    """``pipeline.json`` as written (the directory is where it lies, not in it)."""

    id: str
    spec: str
    cluster: str
    stages: dict[str, StageRun]
    values: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pipeline:
    id: str
    spec_path: str
    cluster: str
    dir: Path
    stages: dict[str, StageRun] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        from alpaca_jobs.common.files import atomic_write

        self.dir.mkdir(parents=True, exist_ok=True)
        body = {"id": self.id, "spec": self.spec_path, "cluster": self.cluster,
                "stages": {k: vars(v) for k, v in self.stages.items()}, "values": self.values,
                "checks": self.checks}
        atomic_write(self.dir / PIPELINE_FILE, json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, pipe_dir: Path) -> Pipeline:
        """The pipeline saved in ``pipe_dir``; a PipelineFileError naming the file and field."""
        from alpaca_jobs.common.statefiles import as_type, read_json

        path = Path(pipe_dir) / PIPELINE_FILE
        fix = "restore it, or run the pipeline again with a new --run-id (each stage's run dir still holds its own record)"
        data = read_json(path, fix, PipelineFileError)
        if data is None:
            raise PipelineFileError(f"{path}: no such file; is {Path(pipe_dir).name} a pipeline?")
        body = as_type(_Body, data, str(path), PipelineFileError, "a pipeline (a JSON object)", fix)
        return cls(body.id, body.spec, body.cluster, Path(pipe_dir), body.stages, body.values, body.checks)


def stage_state(run: StageRun) -> str:
    """The stage's job state as its backend tells it now; the last one saved when it cannot."""
    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.backends.base import JobHandle

    try:
        return str(get_backend(run.backend).status(JobHandle.load(Path(run.run_dir))))
    except Exception:  # noqa: BLE001 - a status line is best effort
        return run.status
