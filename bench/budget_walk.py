"""The walk of ``cost.max_usd``: which functions a call passes through on its way to the budget
check (``ops.forecast.check_budget``) or to what launches the run (a backend's ``submit``, or
``runtime.run_payload`` for a job run in this process), from ``alpaca-jobs submit``,
``alpaca-jobs pipeline`` (a stage, the teacher) and ``alpaca-jobs generate``, on the local backend.

    python bench/budget_walk.py

Each case sets ``cost.max_usd`` below its run's cost (CPU core-hours priced at $100 so the
bound is dollars, not cents). The script wraps ``check_budget``, ``LocalBackend.submit`` and ``run_payload`` to
note the alpaca_jobs frames on the stack when they are called; the latter two then stop the command
(nothing is started), so a case that never reaches the check shows the path that would have
launched the run unchecked. Printed: per case, the path to each function reached, and whether
the check ran before any submit.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alpaca_jobs import runtime  # noqa: E402
from alpaca_jobs.backends import local as local_backend  # noqa: E402
from alpaca_jobs.common.errors import UserError  # noqa: E402
from alpaca_jobs.ops import forecast as forecast_mod  # noqa: E402

reached: list[tuple[str, list[str]]] = []


def _walk() -> list[str]:
    """alpaca_jobs frames on the stack, outermost first, as module.function."""
    out = []
    for fr in traceback.extract_stack()[:-2]:
        path = Path(fr.filename)
        if "alpaca_jobs" in path.parts:
            mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out.append(f"{mod}.{fr.name}")
    return out


_check = forecast_mod.check_budget


def check_budget(*args, **kwargs):
    reached.append(("check_budget", _walk()))
    return _check(*args, **kwargs)


def submit(self, sub):
    reached.append(("LocalBackend.submit", _walk()))
    raise UserError(f"bench: stopped at LocalBackend.submit of {sub.run_id} (nothing started)")


def run_payload(payload):
    reached.append(("runtime.run_payload", _walk()))
    raise UserError(f"bench: stopped at runtime.run_payload of {payload['run_id']} (nothing started)")


forecast_mod.check_budget = check_budget  # before the CLI imports it
local_backend.LocalBackend.submit = submit
runtime.run_payload = run_payload

from alpaca_jobs.cli import main  # noqa: E402


def case(name: str, args: list[str]) -> None:
    reached.clear()
    res = CliRunner().invoke(main, args)
    print(f"\n== {name}: alpaca-jobs {' '.join(args[:2])} ... -> exit {res.exit_code}")
    last = (res.output.strip().splitlines() or [""])[-1]
    print(f"   last line: {last[:200]}")
    for what, walk in reached:
        print(f"   reached {what}:")
        print("     " + "\n     -> ".join(walk))
    names = [w for w, _ in reached]
    launches = [i for i, w in enumerate(names) if w != "check_budget"]
    checked = "check_budget" in names and (not launches or names.index("check_budget") < launches[0])
    print(f"   cost.max_usd checked before any submit: {'yes' if checked else 'NO'}")


def main_() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="budget-walk-"))
    runs = tmp / "runs"
    priced = ["cost.cpu_core_hour_usd=100", f"runs_dir={runs}"]
    case("submit", ["submit", str(ROOT / "jobs/train-local.yaml"), "--dry-run",
                    *(a for s in [*priced, "cost.max_usd=1"] for a in ("--set", s))])
    pipe = tmp / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump({
        "pipeline": "budget-walk", "runs_dir": str(runs),
        "teacher": {"url": "http://127.0.0.1:9/v1", "model": "teacher"},
        "stages": {
            "generate": {"spec": str(ROOT / "jobs/generate-local.yaml"),
                         "set": ["generate.api.base_url=${teacher.url}", *priced]},
            "train": {"spec": str(ROOT / "jobs/train-local.yaml"),
                      "set": ["train.data=${generate.data}", "cost.max_usd=1", *priced]},
        }}, sort_keys=False))
    case("pipeline (train over budget)", ["pipeline", str(pipe), "--run-id", "walk"])
    _dirs(runs)
    shutil.rmtree(runs, ignore_errors=True)
    body = yaml.safe_load(pipe.read_text())
    body["teacher"] = {"spec": str(ROOT / "jobs/serve-local.yaml"),
                       "set": ["serve.port=8109", "cost.max_usd=1", *priced]}
    body["stages"]["train"]["set"].remove("cost.max_usd=1")
    pipe.write_text(yaml.safe_dump(body, sort_keys=False))
    case("pipeline (teacher over budget)", ["pipeline", str(pipe), "--run-id", "walk"])
    _dirs(runs)
    body["teacher"] = {"url": "http://127.0.0.1:9/v1", "model": "teacher"}
    body["stages"]["train"]["set"].append("cost.max_usd=1000")
    pipe.write_text(yaml.safe_dump(body, sort_keys=False))
    shutil.rmtree(runs, ignore_errors=True)
    case("pipeline (within budget: the first stage is submitted)", ["pipeline", str(pipe), "--run-id", "walk"])
    case("generate here", ["generate", str(ROOT / "jobs/generate-local.yaml"),
                           *(a for s in [*priced, "cost.max_usd=1"] for a in ("--set", s))])


def _dirs(runs: Path) -> None:
    started = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
    print(f"   run dirs after: {started or 'none'}")


if __name__ == "__main__":
    main_()
