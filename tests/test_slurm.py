"""The Slurm backend against a real Slurm cluster (tests/clusters/slurm.sh): slurmctld,
slurmdbd + MariaDB, munge; these tests use its node on this machine (2 fake GPUs of gres type
a100; multi-node runs are in test_slurm_nodes.py).

The cluster is started by the suite (it needs root). CI runs these; they never skip there.
A developer without root can set ALPACA_JOBS_SKIP_SLURM=1 to skip them knowingly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AWKWARD_ONE_LINE, ROOT, awkward_spec, cli, metrics, slurm_up

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
SPEC = "jobs/train-local.yaml"
GRES = ["--set", "resources.gpus_per_node=2", "--set", "resources.gpu_type=a100-80gb",
        "--set", "slurm.gres_types={a100-80gb: a100}"]
# The compute node is this machine: its `python3` is this venv's when the venv is on PATH (as a
# site's module or venv would put it; sbatch passes PATH on). The baseline names it instead.
ENV = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    slurm_up()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm-runs")


def _wait_done(run_id: str, runs: Path, timeout: float = 240) -> str:
    from alpaca_jobs.backends.states import is_active

    end = time.time() + timeout
    while time.time() < end:
        out = cli("status", run_id, "--runs-dir", str(runs)).stdout
        state = out.split(":", 1)[1].split()[0] if ":" in out else "PENDING"
        if not is_active(state):
            return out
        time.sleep(1)
    raise AssertionError(f"{run_id} still running after {timeout} s")


def _record(runs: Path, run_id: str) -> dict:
    return json.loads((runs / run_id / "run.json").read_text())


@pytest.fixture(scope="module")
def baseline(runs) -> Path:
    """`make submit-train CLUSTER=slurm SPEC=jobs/train-local.yaml`, followed to the end."""
    proc = subprocess.run(
        ["make", "-s", "submit-train", "CLUSTER=slurm", f"SPEC={SPEC}", f"VENV={sys.prefix}",
         f"SETS=runs_dir={runs} slurm.python={sys.executable}", "ARGS=--run-id base --wait"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    assert "submitted base to slurm (job " in proc.stdout
    assert "scheduler" in proc.stdout and "agrees with the job's own" in proc.stdout
    return runs / "base"


def test_embedded_default_trains_on_slurm(baseline):
    rec = json.loads((baseline / "run.json").read_text())
    assert rec["status"] == "completed" and rec["backend"] == "slurm" and rec["steps"] == 33
    assert (baseline / "model" / "model.safetensors").is_file()
    assert rec["scheduler"]["gpus"] == 0 and rec["scheduler"]["agree"]
    from alpaca_jobs.ops import ledger

    with ledger.connect(baseline.parent / "ledger.sqlite3", create=False) as conn:
        row = next(r for r in ledger.records(conn) if r.run_id == "base")
    assert row.backend == "slurm" and row.scheduler["agree"]  # the ledger has sacct's figures


def test_gres_gpus_timeout_signal_checkpoint_requeue_resume(baseline, runs):
    """USR2 is Slurm's time-limit warning (--signal=USR2@120): checkpoint, requeue, resume."""
    proc = cli("submit", SPEC, "--cluster", "slurm", "--run-id", "gres", "--set", f"runs_dir={runs}",
               "--set", "train.checkpoint_every_steps=4", *GRES, env=ENV)
    assert proc.returncode == 0, proc.stderr
    run_dir = runs / "gres"
    end = time.time() + 180
    while len(metrics(run_dir)) < 6 and time.time() < end:
        time.sleep(0.3)
    job = json.loads((run_dir / "handle.json").read_text())["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    out = _wait_done("gres", runs)
    assert "gres: COMPLETED" in out, out
    rec = _record(runs, "gres")
    assert rec["attempts"] == 2 and rec["status"] == "completed"
    assert [m["loss"] for m in metrics(run_dir)] == [m["loss"] for m in metrics(baseline)]
    sch = rec["scheduler"]
    assert sch["attempts"] == 2 and sch["gpus"] == 2 and rec["gpus_per_node"] == 2
    # Both measurements of GPU-hours: the job's own and sacct's, within the stated tolerance.
    assert sch["agree"], sch
    assert abs(sch["gpu_seconds"] - rec["gpu_seconds"]) <= 2 * sch["tolerance_seconds"]
    log = (run_dir / "logs" / "rank_0_log.out").read_text()
    assert "received SIGUSR2" in log and "requeueing Slurm job" in log and "resumed from" in log
    lines = [x for x in log.splitlines() if x.strip()]
    assert len(lines) == len(set(lines)), "a log line appears twice"


def test_cancel_checkpoints_then_stops(runs):
    proc = cli("submit", SPEC, "--cluster", "slurm", "--run-id", "cancelled", "--set", f"runs_dir={runs}", env=ENV)
    assert proc.returncode == 0, proc.stderr
    end = time.time() + 180
    while len(metrics(runs / "cancelled")) < 3 and time.time() < end:
        time.sleep(0.3)
    assert cli("cancel", "cancelled", "--runs-dir", str(runs)).returncode == 0
    out = _wait_done("cancelled", runs)
    assert "cancelled: CANCELLED" in out
    time.sleep(2)  # the checkpoint was written in the KillWait grace period
    assert (runs / "cancelled" / "checkpoints" / "latest").is_file()
    assert _record(runs, "cancelled")["status"] == "interrupted"


def test_failing_job_surfaces_its_error(runs, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "wide"}')
    proc = cli("submit", SPEC, "--cluster", "slurm", "--run-id", "failing", "--set", f"runs_dir={runs}",
               "--set", f"train.base_model={broken}", env=ENV)
    assert proc.returncode == 0, proc.stderr
    out = _wait_done("failing", runs)
    assert "failing: FAILED" in out and "\nerror" in out, out
    logs = cli("logs", "failing", "--runs-dir", str(runs)).stdout
    assert "Traceback" in logs and _record(runs, "failing")["error"].split(":")[0] in logs


def test_sweep_is_one_job_array(runs):
    proc = cli("submit", SPEC, "--cluster", "slurm", "--run-id", "sweep", "--set", f"runs_dir={runs}",
               "--set", "train.max_steps=3", "--sweep", "train.learning_rate=1.0e-3,3.0e-3", env=ENV)
    assert proc.returncode == 0, proc.stderr
    ids = [json.loads((runs / f"sweep-{i}" / "handle.json").read_text())["job_id"] for i in (0, 1)]
    assert ids[0].split("_")[0] == ids[1].split("_")[0] and ids[0] != ids[1]  # one array, two tasks
    stored = subprocess.run(["scontrol", "write", "batch_script", ids[0], "-"], capture_output=True, text=True,
                            check=True).stdout
    assert stored == (runs / "sweep-array" / "job.sbatch").read_text() and "#SBATCH --array=0-1\n" in stored
    assert f"RUN_DIRS=({runs / 'sweep-0'} {runs / 'sweep-1'})\n" in stored
    for i in (0, 1):
        assert f"sweep-{i}: COMPLETED" in _wait_done(f"sweep-{i}", runs)
    peak = [metrics(runs / f"sweep-{i}")[0]["lr"] for i in (0, 1)]  # after 1 warmup step
    assert peak == [1.0e-3, 3.0e-3]


def test_plain_sbatch_script_runs(tmp_path):
    """`sbatch slurm/train-local.sbatch` as it is, from the repository root, with nothing made
    beforehand (the batch output is sent to tmp_path here only to keep the checkout clean)."""
    run_dir = tmp_path / "plain"
    out = subprocess.run(["sbatch", "--parsable", f"--output={tmp_path}/%x-%j.out", "slurm/train-local.sbatch"],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **ENV, "ALPACA_JOBS_RUN_DIR": str(run_dir)}, check=True)
    job = out.stdout.strip().split(";")[0]
    end = time.time() + 240
    state = ""
    while time.time() < end:
        state = subprocess.run(["sacct", "-j", job, "-X", "-n", "-o", "State"], capture_output=True,
                               text=True).stdout.strip()
        if state and state.split()[0] in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}:
            break
        time.sleep(1)
    assert state.startswith("COMPLETED"), state
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["backend"] == "slurm" and (run_dir / "model").is_dir()
    assert "step 33/33" in (run_dir / "logs" / "rank_0_log.out").read_text()


def test_submitted_script_is_the_dry_run_text(tmp_path):
    """What `submit --dry-run` prints is byte for byte the script Slurm stores for the job."""
    args = ["submit", SPEC, "--cluster", "slurm", "--run-id", "same", "--set", f"runs_dir={tmp_path}",
            "--set", "train.max_steps=1", *GRES]
    dry = cli(*args, "--dry-run", env=ENV)
    assert dry.returncode == 0, dry.stderr
    header, _, text = dry.stdout.partition("\n")
    assert header.startswith("# dry run") and text.startswith("#!/bin/bash\n")
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    proc = cli(*args, env=ENV)
    assert proc.returncode == 0, proc.stderr
    job = json.loads((tmp_path / "same" / "handle.json").read_text())["job_id"]
    stored = subprocess.run(["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True,
                            check=True).stdout
    assert stored == text and (tmp_path / "same" / "job.sbatch").read_text() == text
    assert "#SBATCH --gres=gpu:a100:2" in stored and "wckey" not in stored
    assert "same: COMPLETED" in _wait_done("same", tmp_path)


@pytest.mark.parametrize("python,needle", [
    ("/nonexistent/bin/python3", "slurm.python: '/nonexistent/bin/python3' is not a command on a compute node; "
                                 "set slurm.python to the interpreter there (a path), or slurm.container"),
    ("/bin/false", "slurm.python: '/bin/false' on a compute node cannot import alpaca_jobs, submitit, torch"),
])
def test_node_python_is_checked_on_a_compute_node(tmp_path, python, needle):
    proc = cli("submit", SPEC, "--cluster", "slurm", "--set", f"runs_dir={tmp_path}", "--set",
               f"slurm.python={python}", timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("sets,needle", [
    (["resources.gpus_per_node=8", "resources.gpu_type=a100-80gb", "resources.processes_per_node=null",
      "train.global_batch_size=32"],
     "resources.gpus_per_node: 8 GPUs per node asked, but the largest node in any partition has 2"),
    (["resources.nodes=4", "train.global_batch_size=32"], "resources.nodes: 4 nodes asked, but any partition has 2; lower resources.nodes"),
    (["resources.nodes=2", "resources.gpus_per_node=2", "resources.gpu_type=a100-80gb", "train.global_batch_size=32"],
     "resources.nodes: 2 nodes with 2 GPUs asked, but any partition has 1"),  # multi's nodes have 1 each
    (["slurm.partition=h100-xl"], "slurm.partition: unknown partition 'h100-xl'; this cluster has: debug, gpu, multi"),
    (["resources.time_limit=three hours"], "resources.time_limit: time_limit 'three hours' is not a duration"),
])
def test_impossible_requests_fail_before_submission(tmp_path, sets, needle):
    args = [a for s in sets for a in ("--set", s)]
    proc = cli("submit", SPEC, "--cluster", "slurm", "--set", f"runs_dir={tmp_path}", *args, timeout=60, env=ENV)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


def test_no_secret_in_pickles_logs_or_scripts(runs):
    secret = "sk-alpaca-test-0123456789abcdef"
    proc = cli("submit", SPEC, "--cluster", "slurm", "--run-id", "secret", "--set", f"runs_dir={runs}",
               "--set", "train.max_steps=1", env={**ENV, "OPENAI_API_KEY": secret, "HF_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr
    _wait_done("secret", runs)
    files = [p for p in (runs / "secret").rglob("*") if p.is_file()]
    assert {"payload.json", "job.sbatch"} <= {p.name for p in files}
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    dry = cli("submit", SPEC, "--cluster", "slurm", "--dry-run", env={"OPENAI_API_KEY": secret})
    assert secret not in dry.stdout


def test_serve_job_on_slurm(runs):
    from tests.test_serve import MODEL, _free_port, _wait_ready

    port = _free_port()
    proc = cli("submit", "jobs/serve-local.yaml", "--cluster", "slurm", "--run-id", "served",
               "--set", f"runs_dir={runs}", "--set", f"serve.port={port}", "--set", f"serve.flags_db={runs}/flags.db",
               env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert _wait_ready(port)["model"] == MODEL  # the node is this machine
    assert "served: RUNNING" in cli("status", "served", "--runs-dir", str(runs)).stdout
    assert cli("cancel", "served", "--runs-dir", str(runs)).returncode == 0
    assert "served: CANCELLED" in _wait_done("served", runs)


def test_pipeline_chain_runs_as_dependent_slurm_jobs(tmp_path):
    """generate -> train -> {serve, evaluate} submitted at once with afterok dependencies;
    a second `pipeline --run-id` follows the queued jobs instead of submitting them again."""
    from tests.teacher import Teacher
    from tests.test_pipeline import check_outputs, small_pipeline
    from tests.test_serve import _free_port

    with Teacher(n_tasks=8) as t:
        path = small_pipeline(tmp_path, t.base_url, port=_free_port(), name="slurm-pipe",
                              extra=[f"slurm.python={sys.executable}"])
        first = cli("pipeline", str(path), "--cluster", "slurm", "--run-id", "sp", "--no-wait")
        assert first.returncode == 0, first.stderr[-3000:]
        pipe = json.loads((tmp_path / "runs" / "sp" / "pipeline.json").read_text())
        ids = {k: v["job_id"] for k, v in pipe["stages"].items()}
        assert set(ids) == {"generate", "train", "serve", "evaluate"} and all(ids.values())
        for stage, after in (("train", "generate"), ("serve", "train"), ("evaluate", "train")):
            assert f"(job {ids[stage]}) after job {ids[after]}" in first.stdout
        shown = subprocess.run(["scontrol", "show", "job", ids["evaluate"]], capture_output=True, text=True).stdout
        assert f"afterok:{ids['train']}" in shown or "JobState=COMPLETED" in shown or "RUNNING" in shown
        script = (tmp_path / "runs" / "sp-evaluate" / "job.sbatch").read_text()  # what Slurm was sent
        assert f"#SBATCH --dependency=afterok:{ids['train']}\n#SBATCH --kill-on-invalid-dep=yes\n" in script
        second = cli("pipeline", str(path), "--cluster", "slurm", "--run-id", "sp", timeout=900)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "already queued or running" in second.stdout or "completed before" in second.stdout
        again = json.loads((tmp_path / "runs" / "sp" / "pipeline.json").read_text())
        # Nothing submitted twice: each stage follows its first job, or reuses what it completed
        # (pipeline/run.py then records no job id for it).
        for stage, run in again["stages"].items():
            assert run["job_id"] == ids[stage] or (run["reused"] and run["status"] == "COMPLETED"), (stage, run)
        check_outputs(tmp_path / "runs", "sp", t)
    assert cli("cancel", "sp-serve", "--runs-dir", str(tmp_path / "runs")).returncode == 0


def test_awkward_paths_submit_status_and_logs(tmp_path):
    """Spaces, both quotes, ';', '#', '$' and a backtick in the spec path and the run dir reach
    sbatch, srun and the workers as themselves (a line break is refused at render, one line:
    tests/test_awkward_paths.py)."""
    where = tmp_path / AWKWARD_ONE_LINE
    where.mkdir()
    runs = where / "runs"
    proc = cli("submit", str(awkward_spec(where)), "--cluster", "slurm", "--run-id", "awkward",
               "--set", "train.max_steps=2", env=ENV)
    assert proc.returncode == 0, proc.stderr
    out = _wait_done("awkward", runs)
    assert "awkward: COMPLETED" in out, out + cli("logs", "awkward", "--runs-dir", str(runs)).stdout
    assert (runs / "awkward" / "logs" / "batch.out").is_file()  # #SBATCH --output, quoted for sbatch
    assert _record(runs, "awkward")["steps"] == 2
    logs = cli("logs", "awkward", "--runs-dir", str(runs))
    assert logs.returncode == 0 and "step 2/2" in logs.stdout, logs.stderr
