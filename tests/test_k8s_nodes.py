"""A train job across two pods of the test control plane (tests/clusters/k8s.sh): the stand-in
kubelet runs each pod of a multi-node run in network, hostname and mount namespaces of its own
(tests/clusters/pod_network.py), with its own address on a private bridge (10.214.0.0/16) and
the names the cluster's DNS would give it under the run's headless Service. Nothing passes
between the pods through a shared loopback: the rendezvous and every collective go over those
addresses.

The test server is 1.20, older than Indexed Jobs: the run is one Job per node (the Indexed
rendering is checked in tests/test_render.py). One process per pod (the embedded default on
CPU, gloo): the losses equal a one-pod, two-process run of the same data; SIGKILL of one pod's
processes fails that pod, its peer loses it and fails too, both Jobs start their pods again,
and the set resumes from the checkpoint on the shared claim with bit-identical losses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import cli, metrics, worker_pid
from tests.test_k8s import _kubectl_json, _wait, kube  # noqa: F401 - the control plane fixture

pytestmark = [pytest.mark.integration, pytest.mark.k8s]
SPEC = "jobs/train-local.yaml"
STEPS = ["train.max_steps=12", "train.checkpoint_every_steps=4"]
TWO_PODS = ["resources.nodes=2", "resources.processes_per_node=1"]


def _claim(ns: str, runs: Path, name: str = "runs", mode: str = "ReadWriteMany") -> None:
    """A PersistentVolume on a host path and a claim bound to it (the kubelet mounts host paths)."""
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-{name}"},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [mode], "storageClassName": "",
                   "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(runs)},
                   "claimRef": {"namespace": ns, "name": name}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
           "spec": {"accessModes": [mode], "storageClassName": "", "volumeName": f"{ns}-{name}",
                    "resources": {"requests": {"storage": "1Gi"}}}}
    for obj in (pv, pvc):
        subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(obj), text=True, check=True,
                       capture_output=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One namespace for the module, with a ReadWriteMany claim on the runs directory."""
    import uuid

    name = f"n-{uuid.uuid4().hex[:8]}"
    runs = tmp_path_factory.mktemp("k8s-nodes")
    subprocess.run(["kubectl", "create", "namespace", name], check=True, capture_output=True)
    _claim(name, runs)
    yield name, runs
    subprocess.run(["kubectl", "delete", "namespace", name, "--wait=false"], capture_output=True)
    subprocess.run(["kubectl", "delete", "pv", f"{name}-runs", "--wait=false"], capture_output=True)


def _submit(shared, run_id: str, *sets: str) -> subprocess.CompletedProcess:
    ns, runs = shared
    args = [f"runs_dir={runs}", f"k8s.namespace={ns}", f"k8s.volumes=[{{claim: runs, mount: {runs}}}]",
            *STEPS, *sets]
    return cli("submit", SPEC, "--cluster", "k8s", "--run-id", run_id, *[a for s in args for a in ("--set", s)])


def _done(shared, run_id: str, timeout: float = 400) -> dict:
    ns, runs = shared
    out = _wait(run_id, runs, {"COMPLETED", "FAILED"}, timeout=timeout)
    assert f"{run_id}: COMPLETED" in out, out + cli("logs", run_id, "--rank", "all", "--runs-dir", str(runs)).stdout
    return json.loads((runs / run_id / "run.json").read_text())


@pytest.fixture(scope="module")
def one_pod(shared) -> list[float]:
    """The reference: one pod, two processes, the same data and steps."""
    proc = _submit(shared, "one")
    assert proc.returncode == 0, proc.stderr
    _done(shared, "one")
    return [m["loss"] for m in metrics(shared[1] / "one")]


@pytest.fixture(scope="module")
def two_pods(shared) -> Path:
    proc = _submit(shared, "two", *TWO_PODS)
    assert proc.returncode == 0, proc.stderr
    assert f"(job {shared[0]}/two)" in proc.stdout, proc.stdout
    _done(shared, "two")
    return shared[1] / "two"


def test_two_pods_train_like_one_pod_of_two_processes(shared, two_pods, one_pod):
    ns, runs = shared
    rec = json.loads((two_pods / "run.json").read_text())
    assert rec["status"] == "completed" and rec["nodes"] == 2 and rec["attempts"] == 1
    losses = [m["loss"] for m in metrics(two_pods)]
    assert len(losses) == len(one_pod) == rec["steps"] == 12
    assert losses == pytest.approx(one_pod, rel=1e-4)
    # The cluster's own objects: one Job per node (a 1.20 server), a headless Service.
    jobs = _kubectl_json(ns, "jobs", "-l", "alpaca-jobs/run-id=two")["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == ["two-0", "two-1"]
    svc = _kubectl_json(ns, "service", "two")
    assert svc["spec"]["clusterIP"] == "None"
    pods = _kubectl_json(ns, "pods", "-l", "alpaca-jobs/run-id=two")["items"]
    ips = {p["metadata"]["labels"]["alpaca-jobs/node"]: p["status"]["podIP"] for p in pods}
    assert set(ips) == {"0", "1"} and all(ip.startswith("10.214.") for ip in ips.values()), ips
    assert len(set(ips.values())) == 2
    # Each rank ran in its own pod (hostname), and met the other at pod 0's address.
    rows = [json.loads(p.read_text()) for p in (two_pods / "usage").glob("*.json")]
    assert {(r["rank"], r["host"]) for r in rows} == {(0, "two-0"), (1, "two-1")}
    assert len({r["attempt"] for r in rows}) == 1  # the two pods bill one attempt
    log0 = cli("logs", "two", "--runs-dir", str(runs)).stdout
    assert f"rendezvous at two-0.two:29500 ({ips['0']}), from two-0" in log0, log0[-3000:]
    # logs reach every pod: by rank, by node, all at once.
    log1 = cli("logs", "two", "--rank", "1", "--runs-dir", str(runs)).stdout
    assert "rendezvous host two-0.two is" in log1 and "[rank1]" not in log0
    assert cli("logs", "two", "--node", "1", "--runs-dir", str(runs)).stdout == log1
    every = cli("logs", "two", "--rank", "all", "--runs-dir", str(runs)).stdout
    assert "=== node 0 ===" in every and "=== node 1 ===" in every
    bad = cli("logs", "two", "--node", "2", "--runs-dir", str(runs))
    assert bad.returncode != 0 and "--node 0-1" in bad.stderr and "Traceback" not in bad.stderr
    # status and list treat the two Jobs as one run.
    assert "two: COMPLETED" in cli("status", "two", "--runs-dir", str(runs)).stdout
    listed = [line for line in cli("list", "--runs-dir", str(runs)).stdout.splitlines() if " two " in f" {line} "]
    assert len(listed) == 1, listed


def test_a_killed_pod_restarts_the_set_which_resumes_exactly(shared, two_pods):
    ns, runs = shared
    proc = _submit(shared, "killed", *TWO_PODS)
    assert proc.returncode == 0, proc.stderr
    run_dir = runs / "killed"
    end = time.time() + 300
    while len(metrics(run_dir)) < 6 and time.time() < end:  # past the step-4 checkpoint
        time.sleep(0.3)
    pid = worker_pid(MASTER_ADDR="killed-0.killed", RANK="1")
    assert pid is not None, "no rank 1 worker of the run found"
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # pod 1 dies whole, without a word (its node is gone)
    rec = _done(shared, "killed", timeout=600)
    assert [m["loss"] for m in metrics(run_dir)] == [m["loss"] for m in metrics(two_pods)]
    assert rec["attempts"] == 2, rec
    pods = _kubectl_json(ns, "pods", "-l", "alpaca-jobs/run-id=killed")["items"]
    failed = {p["metadata"]["labels"]["alpaca-jobs/node"] for p in pods if p["status"]["phase"] == "Failed"}
    assert failed == {"0", "1"}, "the whole set restarted: both pods failed once"
    assert "resumed from" in cli("logs", "killed", "--runs-dir", str(runs)).stdout


def test_a_claim_that_is_not_read_write_many_is_refused_before_anything(shared, tmp_path):
    ns, _ = shared
    _claim(ns, tmp_path, name="single", mode="ReadWriteOnce")
    proc = cli("submit", SPEC, "--cluster", "k8s", "--run-id", "rwo", "--set", f"runs_dir={tmp_path}",
               "--set", f"k8s.namespace={ns}", "--set", f"k8s.volumes=[{{claim: single, mount: {tmp_path}}}]",
               *[a for s in TWO_PODS for a in ("--set", s)])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "claim single (runs_dir) is ReadWriteOnce, not ReadWriteMany" in proc.stderr, proc.stderr
    # One line of ours (urllib3 may warn about the test cluster's unverified TLS above it).
    ours = [ln for ln in proc.stderr.strip().splitlines() if "Warning" not in ln and "warnings.warn" not in ln]
    assert len(ours) == 1, proc.stderr
    assert _kubectl_json(ns, "jobs", "-l", "alpaca-jobs/run-id=rwo")["items"] == []
    subprocess.run(["kubectl", "delete", "pv", f"{ns}-single", "--wait=false"], capture_output=True)


def test_down_and_up_touch_only_this_control_planes_daemons(tmp_path):
    """Processes named etcd and kube-apiserver that are not ours run on the machine: `down`
    stops ours (by pid file) and not theirs; `up` starts ours again beside them. Last in this
    module: it restarts the control plane."""
    import shutil

    from tests.conftest import ROOT

    script = str(ROOT / "tests/clusters/k8s.sh")
    foreign = []
    for name in ("etcd", "kube-apiserver"):
        shutil.copy("/bin/sleep", tmp_path / name)
        foreign.append(subprocess.Popen([str(tmp_path / name), "600"], start_new_session=True))
    env = {**os.environ, "PYTHON": os.sys.executable}
    try:
        down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=300, env=env)
        assert down.returncode == 0, down.stderr
        assert all(p.poll() is None for p in foreign), "down stopped a foreign daemon"
        assert subprocess.run([script, "running"], capture_output=True, timeout=30).returncode != 0
        up = subprocess.run([script, "up"], capture_output=True, text=True, timeout=600, env=env)
        assert up.returncode == 0, up.stderr
        assert subprocess.run([script, "running"], capture_output=True, timeout=30).returncode == 0
        assert all(p.poll() is None for p in foreign)
    finally:
        for p in foreign:
            p.kill()
