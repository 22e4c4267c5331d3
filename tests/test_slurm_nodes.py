"""A train job across two Slurm nodes (tests/clusters/slurm.sh): alpaca-n1 and alpaca-n2, each
a slurmd in network, hostname and mount namespaces of its own, with its own address on a
private bridge (10.213.77.11, .12) and a private hosts file, under the one slurmctld. Nothing can
pass between them through a shared loopback: the rendezvous and every collective go over those
addresses.

One process per node (the embedded default on CPU, gloo): its losses equal a one-node,
two-process run of the same data; SIGKILL of one node's task requeues the whole job, which
resumes from its checkpoint with bit-identical losses; sacct and the run record both bill the
two nodes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import cli, metrics, slurm_up, worker_pid
from tests.test_slurm import ENV, SPEC, _record, _wait_done

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
NODES = {"alpaca-n1", "alpaca-n2"}
TWO_NODES = ["--set", "slurm.partition=multi", "--set", "resources.nodes=2",
             "--set", "resources.processes_per_node=1", "--set", "resources.gpus_per_node=1",
             "--set", "resources.gpu_type=a100-80gb", "--set", "slurm.gres_types={a100-80gb: a100}",
             "--set", "train.checkpoint_every_steps=4"]


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    slurm_up()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm-nodes")


def _submit(runs: Path, run_id: str, *sets: str) -> str:
    proc = cli("submit", SPEC, "--cluster", "slurm", "--run-id", run_id, "--set", f"runs_dir={runs}",
               *sets, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return json.loads((runs / run_id / "handle.json").read_text())["job_id"]


@pytest.fixture(scope="module")
def one_node(runs) -> list[float]:
    """The reference: one node, two processes, the same data and steps."""
    _submit(runs, "one", "--set", "train.checkpoint_every_steps=4")
    out = _wait_done("one", runs)
    assert "one: COMPLETED" in out, out
    return [m["loss"] for m in metrics(runs / "one")]


@pytest.fixture(scope="module")
def two_nodes(runs) -> Path:
    _submit(runs, "two", *TWO_NODES)
    out = _wait_done("two", runs)
    assert "two: COMPLETED" in out, out + cli("logs", "two", "--runs-dir", str(runs)).stdout
    return runs / "two"


def test_two_nodes_train_like_one_node_of_two_processes(two_nodes, one_node):
    rec = _record(two_nodes.parent, "two")
    assert rec["status"] == "completed" and rec["nodes"] == 2 and rec["gpus_per_node"] == 1
    losses = [m["loss"] for m in metrics(two_nodes)]
    assert len(losses) == len(one_node) == rec["steps"]
    assert losses == pytest.approx(one_node, rel=1e-4)
    # Each rank ran on its own node; the rendezvous was the first node's bridge address.
    rows = [json.loads(p.read_text()) for p in (two_nodes / "usage").glob("*.json")]
    assert {r["host"] for r in rows} == NODES and {r["rank"] for r in rows} == {0, 1}
    log = (two_nodes / "logs" / "rank_0_log.out").read_text()
    assert "rendezvous at alpaca-n1:" in log and "(10.213.77.11)" in log, log[-2000:]
    # The scheduler bills both nodes, and its GPU-hours agree with the job's own (nodes x GPUs x wall).
    sch = rec["scheduler"]
    assert sch["nodes"] == 2 and sch["gpus"] == 2 and sch["node_lists"] == ["alpaca-n[1-2]"], sch
    assert sch["agree"], sch
    assert rec["gpu_seconds"] == pytest.approx(rec["wall_seconds"] * 2 * 1, rel=1e-3)


def test_a_killed_node_task_requeues_the_job_which_resumes_exactly(two_nodes, runs):
    job = _submit(runs, "killed", *TWO_NODES)
    run_dir = runs / "killed"
    end = time.time() + 240
    while len(metrics(run_dir)) < 6 and time.time() < end:  # past the step-4 checkpoint
        time.sleep(0.3)
    pid = worker_pid(SLURM_JOB_ID=job, SLURM_PROCID="1")
    assert pid is not None, "no task 1 of the job found"
    os.kill(pid, signal.SIGKILL)  # the second node's worker dies without a word
    out = _wait_done("killed", runs, timeout=400)
    assert "killed: COMPLETED" in out, out + cli("logs", "killed", "--runs-dir", str(runs)).stdout
    assert [m["loss"] for m in metrics(run_dir)] == [m["loss"] for m in metrics(two_nodes)]
    rec = _record(runs, "killed")
    assert rec["attempts"] == 2 and rec["scheduler"]["attempts"] == 2 and rec["scheduler"]["nodes"] == 2
    batch = (run_dir / "logs" / "batch.out").read_text()
    assert "ended without an error of its own" in batch and "requeueing job" in batch, batch[-2000:]
    assert "resumed from" in (run_dir / "logs" / "rank_0_log.out").read_text()
    assert not (run_dir / "no-retry").exists()


def test_a_job_failing_with_its_own_error_is_not_requeued(runs, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "wide"}')
    _submit(runs, "own-error", *TWO_NODES, "--set", f"train.base_model={broken}")
    out = _wait_done("own-error", runs)
    assert "own-error: FAILED" in out, out
    assert (runs / "own-error" / "no-retry").read_text().strip()
    rows = _record(runs, "own-error")
    assert rows["attempts"] == 1
    assert "requeueing" not in (runs / "own-error" / "logs" / "batch.out").read_text()


def test_down_and_up_touch_only_this_clusters_daemons():
    """Another Slurm's munged (its own socket) and slurmctld run on the machine: `up` still
    starts ours, `down` stops ours (by pid file), and theirs live on. Last in this module: it
    restarts the cluster."""
    import shutil
    import subprocess

    from tests.conftest import ROOT

    script = str(ROOT / "tests/clusters/slurm.sh")
    import tempfile

    foreign = Path(tempfile.mkdtemp(prefix="foreign-slurm-", dir="/var/tmp"))  # munge must reach it
    foreign.chmod(0o755)
    shutil.chown(foreign, "munge", "munge")
    key = foreign / "munge.key"
    key.write_bytes(os.urandom(1024))
    shutil.chown(key, "munge", "munge")
    key.chmod(0o600)
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={foreign}/munge.sock",
                    f"--key-file={key}", f"--pid-file={foreign}/munged.pid", f"--log-file={foreign}/munged.log",
                    f"--seed-file={foreign}/munged.seed"], check=True, timeout=30)
    fake_ctld = foreign / "slurmctld"  # a process named slurmctld that is not ours
    shutil.copy("/bin/sleep", fake_ctld)
    ctld = subprocess.Popen([str(fake_ctld), "600"], start_new_session=True)
    munged = int((foreign / "munged.pid").read_text())
    try:
        down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr
        assert Path(f"/proc/{munged}").exists() and ctld.poll() is None, "down stopped a foreign daemon"
        assert subprocess.run(["scontrol", "ping"], capture_output=True, timeout=60).returncode != 0
        up = subprocess.run([script, "up"], capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stderr
        assert "multi 2 idle" in up.stderr, up.stderr
        assert Path(f"/proc/{munged}").exists() and ctld.poll() is None
    finally:
        ctld.kill()
        os.kill(munged, signal.SIGTERM)
        shutil.rmtree(foreign, ignore_errors=True)
