"""What a job kind is lives in one declaration: a fifth kind is one module plus one registry
entry (here an entry point of a package of its own), and the CLI, the local backend (real
submitit), the Kubernetes renderer and the runtime's run record all take it as it is. A plugin
kind may bring a spec section of its own, validated like the built-in kinds' sections."""

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


from pydantic import Field

from alpaca_jobs.common.config import Section


class GreetConfig(Section):
    greeting: str = Field(min_length=1)
    times: int = Field(1, ge=1, le=10)

    def check_spec(self, spec):
        if self.times > 2 * spec.resources.cpus_per_process:
            raise ValueError(f"greet.times ({self.times}) is more than 2 x resources.cpus_per_process")

    def derived(self, spec):
        return {"words": self.times * len(self.greeting.split())}


def greet(job):
    cfg = job.spec.greet  # the section, rebuilt in the worker from the payload
    (job.run_dir / "greet.txt").write_text(" ".join([cfg.greeting] * cfg.times))
    return Outcome("completed", {"results": {"times": cfg.times}})


GREET = Kind(name="greet", body="echo_kind:greet", config="echo_kind:GreetConfig")
'''


def _plugin(tmp_path: Path) -> dict[str, str]:
    """A package holding the throwaway kind, with its entry point; the env that finds it."""
    pkg = tmp_path / "plugin"
    dist = pkg / "echo_kind-0.1.dist-info"
    dist.mkdir(parents=True)
    (pkg / "echo_kind.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-kind\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[alpaca_jobs.kinds]\necho = echo_kind\ncrash = echo_kind_crash\n"
                                           "greet = echo_kind_greet\n")
    (pkg / "echo_kind_crash.py").write_text("from echo_kind import CRASH as KIND\n")
    (pkg / "echo_kind_greet.py").write_text("from echo_kind import GREET as KIND\n")
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(pkg)])}


def _spec(tmp_path: Path, job: str = "echo", **sections: dict) -> Path:
    spec = {"job": job, "name": "echo-1", "runs_dir": str(tmp_path / "runs"),
            "layout": str(ROOT / "jobs" / "layouts" / "fsdp2-cpu.yaml"),
            "resources": {"cpus_per_process": 1, "mem_gb": 1, "time_limit": "00:05:00"}, **sections}
    path = tmp_path / f"{job}.yaml"
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


def test_a_plugin_kind_brings_its_own_section_validated_like_the_built_in_ones(tmp_path):
    env = _plugin(tmp_path)
    spec = _spec(tmp_path, "greet", greet={"greeting": "hi there", "times": 2})
    proc = cli("spec", "check", str(spec), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "greeting: hi there" in proc.stdout and "words: 4" in proc.stdout  # its own derived figures
    for override, error in [
        ("greet.times=0", "greet.times: Input should be greater than or equal to 1 (got 0)"),
        ("greet.tmes=2", "greet.tmes: unknown field; valid fields here: greeting, times"),
        ("greet={times: 2}", "greet.greeting: required field is missing"),
        ("greet=null", "greet: required for a greet job"),
        ("train={data: d.json}", "train: not allowed in a greet job"),
        ("greet.times=3", "greet.times (3) is more than 2 x resources.cpus_per_process"),  # its check_spec
        ("job=echo", "greet: not allowed in an echo job"),
    ]:
        proc = cli("spec", "check", str(spec), "--set", override, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (override, proc.stderr)
        assert proc.stderr.strip() == f"error: {spec}: {error}", override
    proc = cli("spec", "check", str(_spec(tmp_path, "echo", echo={"x": 1})), env=env)
    assert f"{tmp_path / 'echo.yaml'}: echo: an echo job takes no section of its own" in proc.stderr
    proc = cli("spec", "check", "jobs/train-local.yaml", "--set", "greet.greeting=hi", env=env)
    assert "jobs/train-local.yaml: greet: not allowed in a train job" in proc.stderr
    proc = cli("submit", str(spec), "--run-id", "greet-run", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "runs" / "greet-run" / "greet.txt").read_text() == "hi there hi there"
