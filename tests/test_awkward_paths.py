"""Run dirs and spec paths with spaces, both quotes, ';', '#', '$', a backtick and a line break
(tests/conftest.py AWKWARD, as submitit's weird_tmp_path) through every backend's render, and
through submit, status and logs on the local backend (tests/test_slurm.py and test_k8s.py do
the same on their clusters). What a path says must arrive as itself, never as shell."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.conftest import AWKWARD, AWKWARD_ONE_LINE, ROOT, awkward_spec, cli
from tests.test_kinds import _plugin


def _echo_spec(where: Path) -> Path:
    spec = {"job": "echo", "name": "echo-1", "runs_dir": str(where / "runs"),
            "layout": str(ROOT / "jobs" / "layouts" / "fsdp2-cpu.yaml"),
            "resources": {"cpus_per_process": 1, "mem_gb": 1, "time_limit": "00:05:00"}}
    path = where / "echo; 'it' \"is\".yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _dry_run(*args: str, env: dict | None = None) -> str:
    proc = cli("submit", *args, "--dry-run", "--run-id", "aw", env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n", 1)[1]  # after the "# dry run: ..." line


def test_local_render_submit_status_and_logs(awkward_dir):
    env = _plugin(awkward_dir.parent)
    spec = _echo_spec(awkward_dir)
    runs = awkward_dir / "runs"
    shown = yaml.safe_load(_dry_run(str(spec), env=env))
    assert shown["folder"] == str(runs / "aw" / "submitit") and shown["payload"]["spec_path"] == str(spec)
    assert not runs.exists()  # a dry run makes nothing
    proc = cli("submit", str(spec), "--run-id", "aw", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = json.loads((runs / "aw" / "run.json").read_text())
    assert rec["status"] == "completed" and (runs / "aw" / "echo.txt").read_text() == "echo-1"
    status = cli("status", "aw", "--runs-dir", str(runs), env=env)
    assert status.returncode == 0 and "aw: COMPLETED" in status.stdout, status.stdout + status.stderr
    logs = cli("logs", "aw", "--runs-dir", str(runs), env=env)
    assert logs.returncode == 0 and "echo job aw: started" in logs.stdout, logs.stdout + logs.stderr


def _run_script(script: str, where: Path, env: dict[str, str]) -> list[str]:
    """Run a rendered batch script with bash, a stand-in ``srun`` on PATH that records its
    arguments (NUL-separated) instead of starting anything; the arguments it got."""
    bin_dir = where / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$SRUN_ARGS"\n')
    (bin_dir / "srun").chmod(0o755)
    out = where / "srun.args"
    proc = subprocess.run(["bash", "-c", script], cwd=where, capture_output=True, text=True,
                          env={**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_ARGS": str(out)})
    assert proc.returncode == 0, proc.stderr
    return out.read_text().split("\0")[:-1]


def test_slurm_render_carries_the_paths_as_they_are(awkward_dir, tmp_path):
    # A submission: the run dir appears in an #SBATCH line, which cannot hold a line break.
    proc = cli("submit", str(awkward_spec(awkward_dir)), "--cluster", "slurm", "--dry-run", "--run-id", "aw")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "runs_dir:" in proc.stderr, proc.stderr
    one_line = tmp_path / AWKWARD_ONE_LINE
    one_line.mkdir()
    script = _dry_run(str(awkward_spec(one_line)), "--cluster", "slurm")
    run_dir = one_line / "runs" / "aw"
    escaped = str(run_dir).replace('"', '\\"')
    assert f'#SBATCH --output="{escaped}/logs/batch.out"\n' in script  # sbatch's own quoting
    args = _run_script(script, one_line, {})
    assert args[args.index("--payload") + 1] == str(run_dir / "payload.json")
    assert (run_dir / "logs").is_dir()  # the script's mkdir reached the right place
    # The checked-in kind of script (alpaca-jobs render): spec path and runs dir, line break too.
    spec = awkward_spec(awkward_dir)
    plain = cli("render", str(spec))
    assert plain.returncode == 0, plain.stderr
    args = _run_script(plain.stdout, awkward_dir, {"SLURM_JOB_ID": "7"})
    assert args[args.index("--spec") + 1] == str(spec)
    assert args[args.index("--run-dir") + 1] == str(awkward_dir / "runs" / "alpaca-tiny-7")


def test_kubernetes_render_carries_the_paths_as_they_are(awkward_dir):
    spec = awkward_spec(awkward_dir)
    docs = [d for d in yaml.safe_load_all(_dry_run(str(spec), "--cluster", "k8s")) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    payload = json.loads(next(iter(cm["data"].values())))
    assert payload["run_dir"] == str(awkward_dir / "runs" / "aw") and payload["spec_path"] == str(spec)
    plain = cli("render", str(spec), "--cluster", "k8s")
    assert plain.returncode == 0, plain.stderr
    job = next(d for d in yaml.safe_load_all(plain.stdout) if d and d["kind"] == "Job")
    annotated = json.loads(next(iter(job["spec"]["template"]["metadata"]["annotations"].values())))
    assert annotated["spec_path"] == str(spec) and AWKWARD in annotated["spec"]["runs_dir"]
