"""The job kinds, in one table: what each runs in its worker processes and how it is checked
before submission. Backends look kinds up here instead of special-casing them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from alpaca_jobs.spec import LoadedSpec

# kind -> (entry function "module:function", module for plain launchers, long-running?)
KINDS: dict[str, tuple[str, str, bool]] = {
    "train": ("alpaca_jobs.train.worker:train_job", "alpaca_jobs.train.worker", False),
    "serve": ("alpaca_jobs.serve.worker:serve_job", "alpaca_jobs.serve.worker", True),
}


def entry_name(kind: str) -> str:
    return KINDS[kind][0]


def entry(kind: str) -> Callable[[dict[str, Any]], Any]:
    module, _, fn = KINDS[kind][0].partition(":")
    return getattr(importlib.import_module(module), fn)


def module(kind: str) -> str:
    return KINDS[kind][1]


def long_running(kind: str) -> bool:
    return KINDS[kind][2]


def preflight_paths(loaded: LoadedSpec, visible: Callable[[str], bool] = lambda _: True) -> None:
    """Check inputs that this machine can see (``visible``) before anything is submitted."""
    from alpaca_jobs.train.models import check_base_model

    spec = loaded.spec
    if spec.job == "train":
        from alpaca_jobs.train.data import read_records

        if visible(spec.train.base_model):
            check_base_model(spec.train.base_model)
        if visible(spec.train.data):
            read_records(spec.train.data)  # malformed data fails here, not in a worker
    elif spec.job == "serve" and spec.serve.model and visible(spec.serve.model):
        from alpaca_jobs.serve.server import resolve_model

        if not spec.serve.model.startswith("preset:"):
            resolve_model(spec.serve.model)
        else:
            check_base_model(spec.serve.model)
