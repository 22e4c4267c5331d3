"""Hybrid sharding (HSDP) across "nodes", simulated on this machine with real gloo processes.

Two torchrun agents, one per simulated node (``--nnodes 2 --node-rank N``, a static rendezvous
on 127.0.0.1), each start 2 workers of the job runtime on the embedded default with the spec
saying nodes=2, processes_per_node=2: the layout's ``sharding: auto`` makes that a
(replicate=2, shard=2) mesh. The yardstick is a one-node, four-process full-shard run on the
same data. (The local backend runs one node only, so torchrun drives the runtime here as a
cluster's per-node launcher would.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SPEC = str(ROOT / "jobs" / "train-local.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run_dir: Path, nodes: int, per_node: int, *sets: str) -> list[subprocess.Popen]:
    """One torchrun agent per simulated node, all started before any is waited on."""
    port, rdzv = _free_port(), f"{run_dir.name}-{time.monotonic_ns()}"  # one id per attempt
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = []
    for node in range(nodes):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node-rank={node}",
               f"--nproc-per-node={per_node}", "--master-addr=127.0.0.1", f"--master-port={port}",
               f"--rdzv-id={rdzv}", "-m", "alpaca_jobs.runtime", "--spec", SPEC, "--run-dir", str(run_dir),
               "--set", f"resources.nodes={nodes}", "--set", f"resources.processes_per_node={per_node}",
               *(x for s in sets for x in ("--set", s))]
        log = open(run_dir.parent / f"{run_dir.name}.node{node}.log", "ab")  # noqa: SIM115 - the child owns it
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def _wait(procs: list[subprocess.Popen], run_dir: Path, timeout: float = 300) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        logs = sorted(run_dir.parent.glob(f"{run_dir.name}.node*.log"))
        print("\n".join(f"--- {x.name}\n" + x.read_text()[-3000:] for x in logs))


def _train(run_dir: Path, nodes: int, per_node: int, *sets: str) -> list[float]:
    codes = _wait(_launch(run_dir, nodes, per_node, *sets), run_dir)
    assert codes == [0] * nodes
    return [row["loss"] for row in metrics(run_dir)]


def _sharding(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "sharding").glob("rank*.json"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hsdp")


@pytest.fixture(scope="module")
def full(runs) -> tuple[Path, list[float]]:
    """The yardstick: one node, four processes, full shard."""
    return runs / "full", _train(runs / "full", 1, 4)


@pytest.fixture(scope="module")
def hybrid(runs) -> tuple[Path, list[float]]:
    return runs / "hybrid", _train(runs / "hybrid", 2, 2)


def test_hybrid_shards_within_a_node_and_matches_full_shard(full, hybrid):
    (full_dir, full_losses), (hybrid_dir, hybrid_losses) = full, hybrid
    assert len(hybrid_losses) == len(full_losses) == 33
    worst = max(abs(a - b) / abs(b) for a, b in zip(hybrid_losses, full_losses, strict=True))
    assert worst < 1e-4, f"HSDP 2x2 vs full shard 1x4: worst relative loss difference {worst:.2e}"
    assert hybrid_losses[-1] < hybrid_losses[0] - 0.5  # it learned

    rows = _sharding(hybrid_dir)
    total = rows[0]["global_numel"]
    assert [r["rank"] for r in rows] == [0, 1, 2, 3]
    assert all(r["mesh"] == {"sharding": "hybrid", "shape": [2, 2], "dim_names": ["replicate", "shard"]}
               for r in rows)
    for node in (rows[:2], rows[2:]):  # each node holds the whole model, split over its 2 ranks
        assert sum(r["local_numel"] for r in node) == total
    assert [r["local_numel"] for r in rows[:2]] == [r["local_numel"] for r in rows[2:]]  # replicas
    flat = _sharding(full_dir)
    assert all(r["mesh"] == {"sharding": "full", "shape": [4], "dim_names": ["shard"]} for r in flat)
    assert sum(r["local_numel"] for r in flat) == total and max(r["local_numel"] for r in flat) < 0.3 * total
    rec = json.loads((hybrid_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["nodes"] == 2 and rec["processes"] == 4
    assert rec["results"]["mesh"]["sharding"] == "hybrid"


def test_hybrid_consolidates_to_the_same_hf_model(full, hybrid):
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(hybrid[0] / "model", dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(full[0] / "model", dtype=torch.float32).state_dict()
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-3, f"largest weight difference HSDP vs full shard: {worst:.2e}"


def test_hybrid_sigterm_checkpoints_and_resume_is_exact(hybrid, runs):
    """SIGTERM to every node's torchrun (what Slurm and the kubelet send): the workers checkpoint
    through DCP and stop; relaunched, the run resumes and its losses are bit-identical."""
    run_dir = runs / "cut"
    procs = _launch(run_dir, 2, 2, "train.checkpoint_every_steps=4")
    end = time.time() + 180
    while len(metrics(run_dir)) < 3 and time.time() < end and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    _wait(procs, run_dir)
    rec = json.loads((run_dir / "run.json").read_text())
    stopped_at = len(metrics(run_dir))
    assert rec["status"] == "interrupted" and 3 <= stopped_at < 33, (rec["status"], stopped_at)
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step-{stopped_at:06d}"
    assert _train(run_dir, 2, 2) == hybrid[1]  # bit-exact
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["attempts"] == 2
