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
