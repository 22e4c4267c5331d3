"""What a job kind is lives in one declaration: a fifth kind is one module plus one registry
entry (here an entry point of a package of its own), and the CLI, the local backend (real
submitit), the Kubernetes renderer and the runtime's run record all take it as it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from tests.conftest import ROOT, cli

PLUGIN = '''
from alpaca_jobs.common.kinds import Kind
from alpaca_jobs.job import Outcome


def body(job):
    (job.run_dir / "echo.txt").write_text(job.spec.name)
    return Outcome("completed", {"results": {"echoed": job.spec.name}})


KIND = Kind(name="echo", body="echo_kind:body",
            outputs=lambda run_dir: {"echo.file": str(run_dir / "echo.txt")})


def crash(job):
    import time

    time.sleep(0.5)  # "loading": the attempt dies before any work is done
    raise RuntimeError("weights are corrupt")


CRASH = Kind(name="crash", body="echo_kind:crash")
'''


def _plugin(tmp_path: Path) -> dict[str, str]:
    """A package holding the throwaway kind, with its entry point; the env that finds it."""
    pkg = tmp_path / "plugin"
    dist = pkg / "echo_kind-0.1.dist-info"
    dist.mkdir(parents=True)
    (pkg / "echo_kind.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-kind\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[alpaca_jobs.kinds]\necho = echo_kind\ncrash = echo_kind_crash\n")
    (pkg / "echo_kind_crash.py").write_text("from echo_kind import CRASH as KIND\n")
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(pkg)])}


def _spec(tmp_path: Path, job: str = "echo") -> Path:
    spec = {"job": job, "name": "echo-1", "runs_dir": str(tmp_path / "runs"),
            "layout": str(ROOT / "jobs" / "layouts" / "fsdp2-cpu.yaml"),
            "resources": {"cpus_per_process": 1, "mem_gb": 1, "time_limit": "00:05:00"}}
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_fifth_kind_runs_locally_and_renders_for_kubernetes(tmp_path):
    env = _plugin(tmp_path)
    spec = _spec(tmp_path)
    proc = cli("submit", str(spec), "--run-id", "echo-run", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "echo-run"
    rec = json.loads((run_dir / "run.json").read_text())
    assert (rec["job"], rec["status"], rec["results"]) == ("echo", "completed", {"echoed": "echo-1"})
    assert (run_dir / "echo.txt").read_text() == "echo-1"
    assert rec["wall_seconds"] > 0 and rec["attempts"] == 1  # billed by the runtime's meter
    proc = cli("submit", str(spec), "--cluster", "k8s", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    objs = [o for o in yaml.safe_load_all(proc.stdout.split("\n", 1)[1]) if o] if not \
        proc.stdout.startswith("apiVersion") else list(yaml.safe_load_all(proc.stdout))
    job = next(o for o in objs if o.get("kind") == "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "alpaca_jobs.runtime"]  # one process: not per GPU
    assert not any(o.get("kind") == "Service" for o in objs)  # not a server


def test_an_unknown_kind_is_one_line_naming_the_kinds(tmp_path):
    proc = cli("spec", "check", str(_spec(tmp_path, job="nope")))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown job kind 'nope'" in proc.stderr and "generate, train, serve, evaluate" in proc.stderr


def test_an_attempt_that_dies_while_loading_still_bills(tmp_path):
    """The job runtime's meter counts from the process's start and ticks on the failure path:
    the failed record bills the time held, the imports included, and says why."""
    env = _plugin(tmp_path)
    proc = cli("submit", str(_spec(tmp_path, job="crash")), "--run-id", "crash-run", env=env, timeout=300)
    assert proc.returncode != 0 and "weights are corrupt" in proc.stderr + proc.stdout
    rec = json.loads((tmp_path / "runs" / "crash-run" / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: weights are corrupt"
    assert rec["attempts"] == 1 and rec["wall_seconds"] >= 0.5 and rec["cpu_seconds"] > 0
