"""The launch description: computed once from the spec and the kind, plain data in the payload."""

from __future__ import annotations

from alpaca_jobs.job import Payload
from alpaca_jobs.launch import Launch, RankSource, Rendezvous, plan_launch
from alpaca_jobs.spec import load_spec
from tests.conftest import ROOT


def test_a_train_job_launches_one_process_per_gpu_on_every_node():
    loaded = load_spec(ROOT / "jobs/train.yaml", ["resources.nodes=2"])
    launch = plan_launch(loaded, RankSource.SCHEDULER_TASKS, max_restarts=3)
    assert (launch.nodes, launch.procs_per_node, launch.world_size) == (2, 8, 16)
    assert launch.per_gpu and launch.multi_node and launch.rendezvous == Rendezvous()
    assert launch.restart.max_restarts == 3 and launch.restart.whole_set


def test_a_one_process_kind_is_one_process_whatever_the_rank_source():
    launch = plan_launch(load_spec(ROOT / "jobs/serve-local.yaml"), RankSource.COMPLETION_INDEX)
    assert (launch.world_size, launch.per_gpu, launch.rendezvous) == (1, False, None)
    assert launch.rank_source is RankSource.SINGLE


def test_the_launch_travels_in_the_payload_as_plain_data(tmp_path):
    loaded = load_spec(ROOT / "jobs/train-local.yaml")
    launch = plan_launch(loaded, RankSource.SCHEDULER_TASKS, on_time_limit="m:f", env_hook="m:g")
    data = Payload.build(loaded, "r1", "slurm", tmp_path / "r1", launch).to_dict()
    assert data["launch"]["rank_source"] == "scheduler-tasks"
    assert Payload.from_dict(data).launch == launch
    old = {k: v for k, v in data.items() if k != "launch"}  # payloads written before launches
    assert Payload.from_dict(old).launch == Launch()


def test_multi_node_pods_wait_for_the_rendezvous_name_then_exec_the_launcher(tmp_path):
    """k8s_rendezvous: a name that resolves starts the command (exec: its exit code is the
    pod's); one that never does fails in one line after the timeout."""
    import subprocess
    import sys

    from alpaca_jobs.backends.k8s_rendezvous import wait_for

    assert wait_for("localhost", timeout=1) == "127.0.0.1"
    assert wait_for("no-such-pod-0.no-such-run.invalid", timeout=0, every=0) is None
    mod = [sys.executable, "-m", "alpaca_jobs.backends.k8s_rendezvous"]
    ran = subprocess.run([*mod, "localhost", "--", "python", "-c", "import sys; sys.exit(7)"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 7 and "rendezvous host localhost is 127.0.0.1" in ran.stderr
    gone = subprocess.run([*mod, "no-such-pod-0.no-such-run.invalid", "--timeout", "0", "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "did not resolve within 0 s" in gone.stderr and "Traceback" not in gone.stderr
    usage = subprocess.run([*mod, "localhost"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
