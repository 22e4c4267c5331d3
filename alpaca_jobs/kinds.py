"""The job kinds, in one table: what each runs in its worker processes and how it is checked
before submission. Backends look kinds up here instead of special-casing them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.spec import LoadedSpec

# kind -> (entry function "module:function", module for plain launchers, long-running?)
KINDS: dict[str, tuple[str, str, bool]] = {
    "generate": ("alpaca_jobs.generate.worker:generate_job", "alpaca_jobs.generate.worker", False),
    "train": ("alpaca_jobs.train.worker:train_job", "alpaca_jobs.train.worker", False),
    "serve": ("alpaca_jobs.serve.worker:serve_job", "alpaca_jobs.serve.worker", True),
    "evaluate": ("alpaca_jobs.evaluate.worker:evaluate_job", "alpaca_jobs.evaluate.worker", False),
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


def payload_main(kind: str, argv: list[str] | None = None) -> int:
    """``python -m <kind's module> --payload FILE``: how launchers that are not submitit
    (a Kubernetes pod, a plain sbatch script) run a one-process job. Bad input is one line on
    stderr and exit code 2, never a traceback."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog=module(kind))
    ap.add_argument("--payload", required=True, help="the rendered payload (JSON)")
    args = ap.parse_args(argv)
    try:
        entry(kind)(json.loads(Path(args.payload).read_text()))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def preflight_paths(loaded: LoadedSpec, visible: Callable[[str], bool] = lambda _: True) -> None:
    """Check inputs that this machine can see (``visible``) before anything is submitted."""
    from alpaca_jobs.common.presets import check_base_model

    spec = loaded.spec
    if spec.job == "train":
        from alpaca_jobs.train.data import read_records

        if visible(spec.train.base_model):
            check_base_model(spec.train.base_model)
        if visible(spec.train.data):
            from alpaca_jobs.train.data import DataStats, clean_records

            # Malformed data fails here, not in a worker; so does data with nothing to train on.
            stats = DataStats()
            if not clean_records(read_records(spec.train.data), stats):
                raise UserError(f"{spec.train.data}: no usable examples (train.data): {stats.records_read} "
                                f"records, {stats.skipped_empty_output} with an empty output, "
                                f"{stats.skipped_duplicate} duplicates")
    elif spec.job == "generate":
        from alpaca_jobs.generate.seeds import load_seeds

        if visible(spec.generate.seeds):
            load_seeds(spec.generate.seeds)  # a malformed seed file fails here, naming the line
        if spec.generate.prompt_file and visible(spec.generate.prompt_file) \
                and not Path(spec.generate.prompt_file).is_file():
            raise UserError(f"{loaded.path}: generate.prompt_file {spec.generate.prompt_file}: no such file")
    elif spec.job == "serve" and spec.serve.model and visible(spec.serve.model):
        from alpaca_jobs.serve.server import resolve_model

        if not spec.serve.model.startswith("preset:"):
            resolve_model(spec.serve.model)
        else:
            check_base_model(spec.serve.model)
    elif spec.job == "evaluate":
        from alpaca_jobs.evaluate.worker import preflight

        preflight(loaded, visible)
