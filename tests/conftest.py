"""Shared fixtures. Tests never touch the user's cache or ./runs: both go to temp dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "seeds" / "seed_tasks.jsonl"


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
    os.environ["ALPACA_JOBS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("ALPACA_JOBS_IMAGE", None)  # image names: the default, unless a test sets it
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The tiny-llama preset, built once per session from the seed tasks."""
    from alpaca_jobs.model_dirs import resolve_base_model

    return resolve_base_model("preset:tiny-llama", str(SEEDS))


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(tokenizer with pad added, model) in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alpaca_jobs.train.models import add_pad_token

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    add_pad_token(tok, model)
    return tok, model


# What careless shell, YAML or #SBATCH quoting breaks on (as submitit's weird_tmp_path fixture):
# spaces, both quotes, ';', '#', '$', a backtick, and (AWKWARD only) a line break.
AWKWARD_ONE_LINE = "we ird 'single' \"double\"; #hash $HOME `tick`"
AWKWARD = AWKWARD_ONE_LINE + "\nsecond line"


@pytest.fixture()
def awkward_dir(tmp_path) -> Path:
    """A directory whose name holds AWKWARD; run dirs and spec files go inside it."""
    path = tmp_path / AWKWARD
    path.mkdir()
    return path


def awkward_spec(where: Path, job: str = "train", spec: str = "jobs/train-local.yaml", **fields) -> Path:
    """``spec`` copied under ``where`` (a name of its own that is awkward too), its paths made
    absolute, its runs in ``where/runs``; ``fields`` are top-level fields to set."""
    import yaml

    data = yaml.safe_load((ROOT / spec).read_text())
    data.update({"runs_dir": str(where / "runs"), "layout": str((ROOT / spec).parent / data.get("layout", "layouts/fsdp2-cpu.yaml"))})
    if job == "train" and "train" in data:
        data["train"]["data"] = str(ROOT / data["train"]["data"])
    data.update(fields)
    path = where / "spec; 'it' \"is\".yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_record(**fields):
    """A complete run record (a CPU training run on the local backend, as build_record writes
    one), with ``fields`` set: for tests that read records back or print them."""
    from alpaca_jobs.ops.record import RunRecord

    base = dict(run_id="r", job="train", backend="local", status="completed", nodes=1, gpus_per_node=0,
                gpu_type=None, processes=1, attempts=1, wall_seconds=60.0, gpu_seconds=0.0, gpu_hours=0.0,
                cpu_seconds=60.0, cpu_hours=60 / 3600, price_per_gpu_hour_usd=0.0, price_source="test",
                cpu_core_hour_usd=0.0, cost_usd=0.0, target_usd=100.0, target_met=True,
                started_at="2026-12-06T00:00:00Z", finished_at="2026-12-06T00:01:00Z")
    return RunRecord(**{**base, **fields})


def cli(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `alpaca-jobs` CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "alpaca_jobs", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def worker_pid(**env: str) -> int | None:
    """The job runtime process whose environment holds every ``NAME=value`` given (a worker
    of a test cluster's job, found through /proc: the tests run as root)."""
    want = {f"{k}={v}".encode() for k, v in env.items()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            environ = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if b"alpaca_jobs.runtime" in cmd and want <= environ:
            return int(proc.name)
    return None


def slurm_up() -> None:
    """Start the test Slurm cluster (tests/clusters/slurm.sh; idempotent) and point this
    process and its children at it: it keeps its config apart from any other Slurm here."""
    if os.environ.get("ALPACA_JOBS_SKIP_SLURM") == "1":
        pytest.skip("ALPACA_JOBS_SKIP_SLURM=1 (never set in CI)")
    script = str(ROOT / "tests/clusters/slurm.sh")
    proc = subprocess.run([script, "up"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"could not start the test Slurm cluster:\n{proc.stderr[-3000:]}"
    env = subprocess.run([script, "env"], capture_output=True, text=True, timeout=60, check=True).stdout
    key, _, value = env.strip().partition("=")
    os.environ[key] = value
