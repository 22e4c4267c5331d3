"""What a job kind is, declared in one place.

A kind (generate, train, serve, evaluate, or one you add) is a frozen ``Kind`` in its own
module (``alpaca_jobs/<kind>/kind.py``), named in ``DECLARED`` below. Backends, the pipeline,
ops and the CLI read the declaration; none of them names a kind. Declarations import nothing
heavy: their hooks import the kind's own code when called.

Adding a kind: write its body (``body(job: Job) -> Outcome``, see ``alpaca_jobs.job``), its
spec section's model if it takes settings (``config``: validated like the built-in kinds'), and a
``KIND = Kind(...)`` beside them, then add one line to ``DECLARED``, or, from another package,
one entry point in the ``alpaca_jobs.kinds`` group (``name = "module"``; every process finds it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpaca_jobs.common.errors import UserError

if TYPE_CHECKING:  # for annotations only: the record model lives in ops, above this layer
    from alpaca_jobs.ops.record import RunRecord

Visible = Callable[[str], bool]  # is this path readable from the submitting machine?


@dataclass(frozen=True)
class Service:
    """A long-running kind serves HTTP: on Kubernetes a Deployment + Service with probes."""

    port: Callable[[Any], int]  # JobSpec -> the port it listens on
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    # (name, check(url, model) -> results): run by the pipeline once the server is up
    check: tuple[str, Callable[[str, str], Any]] | None = None


@dataclass(frozen=True)
class Kind:
    name: str
    body: str  # "module:function", run by the job runtime in every worker process
    # "module:Class": the model of the spec's section named after the kind (a pydantic model,
    # best a ``common.config.Section``); None: the kind takes no section of its own
    config: str | None = None
    per_gpu: bool = False  # launcher: one process per GPU (torchrun, one task each); else one
    service: Service | None = None  # set for servers: they run until cancelled
    # Inputs checked before submission (and in dry runs): (loaded spec, visible) -> None or UserError
    preflight: Callable[[Any, Visible], None] | None = None
    # What a finished run leaves for later pipeline stages: run dir -> {"<kind>.<name>": value}
    outputs: Callable[[Path], dict[str, str]] | None = None
    # Rows this kind adds to the printed run report: record -> [(label, text)]
    report_rows: Callable[[RunRecord], list[tuple[str, str]]] | None = None
    default_target_usd: float | None = None  # the budget a run is held to when its spec sets none
    # The pipeline summary's line for a finished stage: record -> (label, text), or None
    summary: Callable[[RunRecord], tuple[str, str] | None] | None = None
    # Before launch: (loaded spec, ledger records) -> (expected hours or None, the basis in words)
    expected_hours: Callable[[Any, list[RunRecord]], tuple[float | None, str]] | None = None
    # On SIGTERM/SIGUSR2: "flag" (the body polls job.stop and stops cleanly at a safe point) or
    # "interrupt" (KeyboardInterrupt at once: nothing is worth finishing first)
    stop: str = "flag"
    node_imports: str = "alpaca_jobs"  # what the worker's interpreter must import (Slurm's preflight)

    @property
    def long_running(self) -> bool:
        return self.service is not None


# name -> module declaring KIND, in pipeline order.
DECLARED: dict[str, str] = {
    "generate": "alpaca_jobs.generate.kind",
    "train": "alpaca_jobs.train.kind",
    "serve": "alpaca_jobs.serve.kind",
    "evaluate": "alpaca_jobs.evaluate.kind",
}
ENTRY_POINTS = "alpaca_jobs.kinds"  # plugins: name -> module declaring KIND
_KINDS: dict[str, Kind] = {}
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        DECLARED.setdefault(ep.name, ep.value)


def register(kind: Kind) -> Kind:
    """Add (or replace) a kind at run time, e.g. from a plugin or a test."""
    _KINDS[kind.name] = kind
    DECLARED.setdefault(kind.name, "")
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)
    DECLARED.pop(name, None)


def names() -> tuple[str, ...]:
    _load_plugins()
    return tuple(DECLARED)


def get(name: str) -> Kind:
    _load_plugins()
    if name not in DECLARED:
        raise UserError(f"unknown job kind {name!r}; the kinds are {', '.join(DECLARED)}")
    if name not in _KINDS:
        _KINDS[name] = importlib.import_module(DECLARED[name]).KIND
    return _KINDS[name]


def resolve(ref: str) -> Callable[..., Any]:
    """``"module:function"`` -> the function (imported now)."""
    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


def find(name: str) -> Kind | None:
    """The kind named ``name``, or None (a record of a kind this install does not have)."""
    try:
        return get(name)
    except UserError:
        return None


def preflight(loaded: Any, visible: Visible = lambda _: True) -> None:
    """The spec's kind checks its inputs that ``visible`` says this machine can see."""
    kind = get(loaded.spec.job)
    if kind.preflight is not None:
        kind.preflight(loaded, visible)
