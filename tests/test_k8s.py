"""The Kubernetes backend against a real control plane (tests/clusters/k8s.sh): etcd,
kube-apiserver, kube-controller-manager, kube-scheduler (v1.20 from Debian's source), with
tests/clusters/fake_kubelet.py as the node: it runs each pod's command as a host process
(no container runtime can run here) and serves its logs through the API server.

CI runs these; they never skip there. ALPACA_JOBS_SKIP_K8S=1 skips them knowingly.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, metrics

pytestmark = [pytest.mark.integration, pytest.mark.k8s]
SPEC = "jobs/train-local.yaml"


@pytest.fixture(scope="module", autouse=True)
def kube(tmp_path_factory):
    if os.environ.get("ALPACA_JOBS_SKIP_K8S") == "1":
        pytest.skip("ALPACA_JOBS_SKIP_K8S=1 (never set in CI)")
    proc = subprocess.run([str(ROOT / "tests/clusters/k8s.sh"), "up"], capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "PYTHON": os.sys.executable})
    assert proc.returncode == 0, f"could not start the test control plane:\n{proc.stderr[-3000:]}"
    os.environ["KUBECONFIG"] = proc.stdout.strip().splitlines()[-1]
    yield


@pytest.fixture()
def ns():
    name = f"t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["kubectl", "create", "namespace", name], check=True, capture_output=True)
    yield name
    subprocess.run(["kubectl", "delete", "namespace", name, "--wait=false"], capture_output=True)


def _wait(run_id: str, runs: Path, states: set[str], timeout: float = 300) -> str:
    end = time.time() + timeout
    out = ""
    while time.time() < end:
        out = cli("status", run_id, "--runs-dir", str(runs)).stdout
        if ":" in out and out.split(":", 1)[1].split()[0] in states:
            return out
        time.sleep(1)
    raise AssertionError(f"{run_id} not in {states} after {timeout} s: {out}")


def _submit(runs: Path, ns: str, run_id: str, *sets: str) -> subprocess.CompletedProcess:
    args = ["--set", f"runs_dir={runs}", "--set", f"k8s.namespace={ns}", *[a for s in sets for a in ("--set", s)]]
    return cli("submit", SPEC, "--cluster", "k8s", "--run-id", run_id, *args)


def test_training_job_runs_to_completion_with_status_and_logs(ns, tmp_path):
    proc = _submit(tmp_path, ns, "k8s-train", "train.max_steps=4")
    assert proc.returncode == 0, proc.stderr
    assert f"submitted k8s-train to k8s (job {ns}/k8s-train)" in proc.stdout
    out = _wait("k8s-train", tmp_path, {"COMPLETED", "FAILED"})
    assert "k8s-train: COMPLETED" in out, out + cli("logs", "k8s-train", "--runs-dir", str(tmp_path)).stdout
    rec = json.loads((tmp_path / "k8s-train" / "run.json").read_text())
    assert rec["backend"] == "k8s" and rec["status"] == "completed" and rec["steps"] == 4
    logs = cli("logs", "k8s-train", "--runs-dir", str(tmp_path)).stdout  # through the API server
    assert "step 4/4" in logs
    job = json.loads(subprocess.run(["kubectl", "-n", ns, "get", "job", "k8s-train", "-o", "json"],
                                    capture_output=True, text=True, check=True).stdout)
    labels = job["metadata"]["labels"]
    assert labels["alpaca-jobs/run-id"] == "k8s-train" and labels["app.kubernetes.io/component"] == "train"
    cm = subprocess.run(["kubectl", "-n", ns, "get", "configmap", "k8s-train-spec", "-o", "json"],
                        capture_output=True, text=True, check=True).stdout
    assert json.loads(cm)["metadata"]["ownerReferences"][0]["name"] == "k8s-train"


def _kubectl_json(ns: str, *what: str) -> dict:
    got = subprocess.run(["kubectl", "-n", ns, "get", *what, "-o", "json"], capture_output=True, text=True, check=True)
    return json.loads(got.stdout)


def test_cancel_suspends_keeping_status_and_logs_then_submit_resumes(ns, tmp_path):
    assert _submit(tmp_path, ns, "k8s-cancel").returncode == 0
    end = time.time() + 240
    while len(metrics(tmp_path / "k8s-cancel")) < 3 and time.time() < end:
        time.sleep(0.5)
    assert len(metrics(tmp_path / "k8s-cancel")) >= 3
    t0 = time.monotonic()
    proc = cli("cancel", "k8s-cancel", "--runs-dir", str(tmp_path))
    print(f"cancel took {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr
    # The test server is 1.20, older than Job suspend: the pause is parallelism 0.
    assert "suspended (parallelism 0" in proc.stdout and "status and logs kept" in proc.stdout, proc.stdout
    assert "k8s-cancel: CANCELLED" in _wait("k8s-cancel", tmp_path, {"CANCELLED"}, timeout=10)
    job = _kubectl_json(ns, "job", "k8s-cancel")  # the Job and its status stay
    assert job["spec"]["parallelism"] == 0 and job["metadata"]["annotations"]["alpaca-jobs/parallelism"] == "1"
    assert (tmp_path / "k8s-cancel" / "checkpoints" / "latest").is_file()  # SIGTERM -> checkpoint
    rec = json.loads((tmp_path / "k8s-cancel" / "run.json").read_text())
    assert rec["status"] == "interrupted"
    kept = list((tmp_path / "k8s-cancel" / "logs").glob("k8s-cancel-*.log"))
    assert len(kept) == 1 and "step 3/" in kept[0].read_text()
    running = [p for p in _kubectl_json(ns, "pods", "-l", "alpaca-jobs/run-id=k8s-cancel")["items"]
               if p["status"].get("phase") == "Running"]
    assert running == []
    assert "step 3/" in cli("logs", "k8s-cancel", "--runs-dir", str(tmp_path)).stdout  # pod stopped: the kept copy
    # The same run id resumes it: parallelism back to 1, the next pod picks up the checkpoint.
    proc = _submit(tmp_path, ns, "k8s-cancel", "train.max_steps=6")
    assert proc.returncode == 0, proc.stderr
    assert _kubectl_json(ns, "job", "k8s-cancel")["spec"]["parallelism"] == 1
    out = _wait("k8s-cancel", tmp_path, {"COMPLETED", "FAILED"})
    assert "k8s-cancel: COMPLETED" in out, out + cli("logs", "k8s-cancel", "--runs-dir", str(tmp_path)).stdout
    again = cli("cancel", "k8s-cancel", "--runs-dir", str(tmp_path))
    assert again.returncode == 0 and "already finished (COMPLETED)" in again.stdout, again.stdout
    subprocess.run(["kubectl", "-n", ns, "delete", "job", "k8s-cancel", "--wait=true"], check=True, capture_output=True)
    gone = cli("cancel", "k8s-cancel", "--runs-dir", str(tmp_path))
    assert gone.returncode == 0 and "gone (job " in gone.stdout, gone.stdout


def test_server_validation_error_is_surfaced(ns, tmp_path):
    proc = _submit(tmp_path, ns, "k8s-bad", "image=")
    assert proc.returncode == 2 and "Kubernetes refused it (422)" in proc.stderr, proc.stderr
    assert "image" in proc.stderr and "Traceback" not in proc.stderr


def test_secrets_come_by_reference_only(ns, tmp_path):
    secret = "sk-alpaca-k8s-test-secret-42"
    subprocess.run(["kubectl", "-n", ns, "create", "secret", "generic", "api", f"--from-literal=openai={secret}"],
                   check=True, capture_output=True)
    sets = ["train.max_steps=1", "k8s.secret_env={OPENAI_API_KEY: {secret: api, key: openai}}"]
    dry = cli("submit", SPEC, "--cluster", "k8s", "--dry-run", *[a for s in sets for a in ("--set", s)],
              env={"OPENAI_API_KEY": secret})
    assert "secretKeyRef" in dry.stdout and secret not in dry.stdout
    proc = _submit(tmp_path, ns, "k8s-secret", *sets)
    assert proc.returncode == 0, proc.stderr
    _wait("k8s-secret", tmp_path, {"COMPLETED", "FAILED"})
    job = subprocess.run(["kubectl", "-n", ns, "get", "job,configmap", "-o", "yaml"], capture_output=True,
                         text=True, check=True).stdout
    assert "secretKeyRef" in job and secret not in job
    for p in (tmp_path / "k8s-secret").rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    assert secret not in cli("logs", "k8s-secret", "--runs-dir", str(tmp_path)).stdout


@pytest.mark.parametrize("overlay", ["train-7b", "train-local", "serve-7b", "generate"])
def test_kubectl_apply_k_each_overlay(overlay):
    """kubectl builds each overlay and the server accepts every object. The test server is
    1.20, older than podFailurePolicy (1.26+), so kubectl's client-side check against *its*
    schema is off; the schema check for a current version is kubernetes-validate's (test_render)."""
    path = ROOT / "k8s" / "overlays" / overlay
    made_ns = False
    if overlay in ("serve-7b", "generate"):  # it deploys into the namespace train-7b owns
        made_ns = subprocess.run(["kubectl", "create", "namespace", "alpaca-jobs"], capture_output=True).returncode == 0
    proc = subprocess.run(["kubectl", "apply", "-k", str(path), "--validate=false"], capture_output=True, text=True)
    try:
        assert proc.returncode == 0, proc.stderr
        assert ("job.batch/" in proc.stdout or "deployment.apps/" in proc.stdout) and "configmap/" in proc.stdout
    finally:
        subprocess.run(["kubectl", "delete", "-k", str(path), "--wait=true", "--timeout=120s"], capture_output=True)
        if made_ns:
            subprocess.run(["kubectl", "delete", "namespace", "alpaca-jobs", "--wait=true", "--timeout=120s"],
                           capture_output=True)


def test_serve_deployment_answers_and_cancel_removes_everything(ns, tmp_path):
    from tests.test_serve import _free_port

    port = _free_port()
    proc = cli("submit", "jobs/serve-local.yaml", "--cluster", "k8s", "--run-id", "k8s-serve",
               "--set", f"runs_dir={tmp_path}", "--set", f"k8s.namespace={ns}", "--set", f"serve.port={port}",
               "--set", f"serve.flags_db={tmp_path}/flags.db")
    assert proc.returncode == 0, proc.stderr
    assert f"(job {ns}/deployment/k8s-serve)" in proc.stdout
    _wait("k8s-serve", tmp_path, {"RUNNING"}, timeout=120)
    import urllib.request

    end = time.time() + 240
    while time.time() < end:  # the pod's process (the fake kubelet's) loads the model, then answers
        try:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read())
            break
        except OSError:
            time.sleep(1)
    assert body["status"] == "ready"
    svc = subprocess.run(["kubectl", "-n", ns, "get", "service", "k8s-serve", "-o", "json"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(svc)["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert cli("cancel", "k8s-serve", "--runs-dir", str(tmp_path)).returncode == 0
    _wait("k8s-serve", tmp_path, {"DELETED"}, timeout=120)
    end = time.time() + 60
    while time.time() < end and subprocess.run(["kubectl", "-n", ns, "get", "service", "k8s-serve"],
                                                capture_output=True).returncode == 0:
        time.sleep(1)  # the garbage collector removes what the Deployment owned
    assert subprocess.run(["kubectl", "-n", ns, "get", "service", "k8s-serve"], capture_output=True).returncode != 0


def test_pipeline_chain_runs_as_kubernetes_jobs(ns, tmp_path):
    """Each stage a Job (serve a Deployment), submitted once the stage before completed."""
    from tests.teacher import Teacher
    from tests.test_pipeline import check_outputs, small_pipeline
    from tests.test_serve import _free_port

    with Teacher(n_tasks=8) as t:
        path = small_pipeline(tmp_path, t.base_url, [f"k8s.namespace={ns}"], port=_free_port(), name="k8s-pipe")
        r = cli("pipeline", str(path), "--cluster", "k8s", "--run-id", "kp", timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        check_outputs(tmp_path / "runs", "kp", t)
    kinds = {}
    for stage in ("generate", "train", "evaluate"):
        got = subprocess.run(["kubectl", "-n", ns, "get", "job", f"kp-{stage}", "-o", "json"],
                             capture_output=True, text=True, check=True).stdout
        kinds[stage] = json.loads(got)["status"].get("succeeded")
    assert kinds == {"generate": 1, "train": 1, "evaluate": 1}
    assert subprocess.run(["kubectl", "-n", ns, "get", "deployment", "kp-serve"], capture_output=True).returncode == 0
    assert cli("cancel", "kp-serve", "--runs-dir", str(tmp_path / "runs")).returncode == 0
