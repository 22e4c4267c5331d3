"""What a job receives and returns.

``Payload``: the loaded spec and where its run lives, built in one place (``Payload.build``) by
every backend and CLI command, sent as JSON or a pickle of ``to_dict``. ``Job``: what the runtime
hands a kind's body; ``Outcome``: what the body gives back for the run record."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.common.signals import StopFlag
from alpaca_jobs.launch import Launch
from alpaca_jobs.spec import LoadedSpec


@dataclass(frozen=True)
class Payload:
    loaded: LoadedSpec
    run_id: str
    backend: str
    run_dir: Path
    launch: Launch = field(default_factory=Launch)  # how the backend starts the processes

    @classmethod
    def build(cls, loaded: LoadedSpec, run_id: str, backend: str, run_dir: str | Path,
              launch: Launch | None = None) -> Payload:
        return cls(loaded, run_id, backend, Path(run_dir), launch or Launch())

    @property
    def kind(self) -> str:
        return self.loaded.spec.job

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able, picklable without our classes); specs never hold secrets."""
        return {**self.loaded.payload(), "run_id": self.run_id, "backend": self.backend,
                "run_dir": str(self.run_dir), "launch": self.launch.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Payload:
        return cls(LoadedSpec.from_payload(data), data["run_id"], data["backend"], Path(data["run_dir"]),
                   Launch.from_dict(data.get("launch")))


@dataclass
class Outcome:
    status: str  # completed | interrupted | stopped | failed
    fields: dict[str, Any] = field(default_factory=dict)  # record fields (results, api, ...)


@dataclass
class Job:
    """What a body gets: its payload, the stop flag, the meter, and ``partial`` (fields the
    body keeps current so a failed run's record still says what was done and spent)."""

    payload: Payload
    stop: StopFlag
    meter: Any  # ops.usage.UsageMeter
    started: str
    partial: dict[str, Any] = field(default_factory=dict)

    @property
    def loaded(self):
        return self.payload.loaded

    @property
    def spec(self):
        return self.payload.loaded.spec

    @property
    def run_dir(self) -> Path:
        return self.payload.run_dir

    @property
    def rank(self) -> int:
        return int(os.environ.get("RANK", "0"))

    # The run record as it stands now: ``record(status, **fields)``; set by the runtime.
    record: Callable[..., Any] = field(default=lambda status, **fields: None, repr=False)
