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

from tests.conftest import AWKWARD, ROOT, awkward_spec, cli, metrics

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
    assert len(kept) == 1 and "training interrupted at step" in kept[0].read_text()  # logs kept
    running = [p for p in _kubectl_json(ns, "pods", "-l", "alpaca-jobs/run-id=k8s-cancel")["items"]
               if p["status"].get("phase") == "Running"]
    assert running == []
    assert "training interrupted at step" in cli("logs", "k8s-cancel", "--runs-dir", str(tmp_path)).stdout  # pod stopped: the kept copy
    # The same run id resumes it: parallelism back to 1, the next pod picks up the checkpoint.
    proc = _submit(tmp_path, ns, "k8s-cancel", "train.max_steps=6")
    assert proc.returncode == 0, proc.stderr
    assert _kubectl_json(ns, "job", "k8s-cancel")["spec"]["parallelism"] == 1
    out = _wait("k8s-cancel", tmp_path, {"COMPLETED", "FAILED"})
    assert "k8s-cancel: COMPLETED" in out, out + cli("logs", "k8s-cancel", "--runs-dir", str(tmp_path)).stdout
    again = cli("cancel", "k8s-cancel", "--runs-dir", str(tmp_path))
    assert again.returncode == 0 and "already ended (COMPLETED)" in again.stdout, again.stdout
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


CLUSTER_BASE = ROOT / "k8s" / "cluster"
JOB_OVERLAYS = ["train-7b", "train-local", "generate"]  # one Job each, kubectl create -f
APPLIED_OVERLAYS = ["serve-7b"]  # ConfigMap + Deployment + Service, kubectl apply -k


def _objects(path: Path) -> list[dict]:
    """What kubectl sends for a directory: kustomize's build, or its YAML files as they are."""
    import yaml

    if (path / "kustomization.yaml").is_file():
        text = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    else:
        text = "---\n".join(p.read_text() for p in sorted(path.glob("*.yaml")))
    return [d for d in yaml.safe_load_all(text) if d]


def _ids(docs: list[dict]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"].get("name") or d["metadata"]["generateName"]) for d in docs}


def test_cluster_base_and_job_overlays_own_disjoint_objects():
    base = _ids(_objects(CLUSTER_BASE))
    assert {k for k, _ in base} == {"Namespace", "PersistentVolumeClaim"}
    seen = set(base)
    for overlay in JOB_OVERLAYS + APPLIED_OVERLAYS:
        ids = _ids(_objects(ROOT / "k8s" / "overlays" / overlay))
        assert ids and not ids & seen, f"{overlay} also owns {ids & seen}"
        assert not {k for k, _ in ids} & {"Namespace", "PersistentVolumeClaim"}, overlay
        seen |= ids
    for overlay in JOB_OVERLAYS:  # a Job per run: a new name at every create
        (job,) = _objects(ROOT / "k8s" / "overlays" / overlay)
        assert job["kind"] == "Job" and "name" not in job["metadata"] and job["metadata"]["generateName"].endswith("-")


def _kubectl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def _names(ns: str, what: str) -> set[str]:
    return {i["metadata"]["name"] for i in _kubectl_json(ns, what)["items"]}


def test_deleting_one_overlay_keeps_the_namespace_the_pvcs_and_other_jobs():
    """The real API server: the cluster base once, then a Job overlay twice and the serve
    overlay; deleting serve-7b leaves both training runs, the PVCs and the namespace."""
    ns, job_dir = "alpaca-jobs", str(ROOT / "k8s" / "overlays" / "train-7b")
    try:
        assert "namespace/alpaca-jobs" in _kubectl("apply", "-k", str(CLUSTER_BASE)).stdout
        # The test server is 1.20: kubectl's client-side schema check knows no podFailurePolicy
        # (1.26+); the check for a current version is kubernetes-validate's (test_render).
        runs = [_kubectl("create", "-n", ns, "-f", job_dir, "--validate=false").stdout for _ in range(2)]
        assert len({r.split()[0] for r in runs}) == 2 and all(r.startswith("job.batch/alpaca-7b-") for r in runs)
        _kubectl("apply", "-k", str(ROOT / "k8s" / "overlays" / "serve-7b"), "--validate=false")
        assert "alpaca-7b-serve" in _names(ns, "deployments")
        _kubectl("delete", "-k", str(ROOT / "k8s" / "overlays" / "serve-7b"), "--wait=true", "--timeout=120s")
        assert "alpaca-7b-serve" not in _names(ns, "deployments")
        assert {r.split()[0].split("/")[1] for r in runs} <= _names(ns, "jobs")
        assert _names(ns, "pvc") == {"alpaca-runs", "alpaca-data", "alpaca-models"}
        _kubectl("delete", "-n", ns, "job", "-l", "alpaca-jobs/run-id=alpaca-7b", "--wait=true", "--timeout=120s")
        assert _names(ns, "pvc") == {"alpaca-runs", "alpaca-data", "alpaca-models"}
        _kubectl("get", "namespace", ns)
        for overlay in ("train-local", "generate"):  # the server takes the other Jobs as they are
            got = _kubectl("create", "-n", ns, "-f", str(ROOT / "k8s" / "overlays" / overlay), "--validate=false",
                           "--dry-run=server").stdout
            assert "created (server dry run)" in got
    finally:
        subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=true", "--timeout=120s"], capture_output=True)


def _covering_mount(job: dict, path: str) -> tuple[str, str]:
    """(claim, path inside the claim) of the deepest PVC mount holding ``path``."""
    pod = job["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] in claims
              and (path + "/").startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"no PVC mount holds {path}"
    m = max(mounts, key=lambda m: len(m["mountPath"]))
    return claims[m["name"]], path[len(m["mountPath"].rstrip("/")):]


def test_generate_writes_where_train_reads_through_the_pvcs():
    from alpaca_jobs.generate.run import DATA_FILE
    from alpaca_jobs.spec import load_spec

    gen_spec, train_spec = load_spec(ROOT / "jobs/generate.yaml").spec, load_spec(ROOT / "jobs/train.yaml").spec
    (gen,) = _objects(ROOT / "k8s" / "overlays" / "generate")
    (train,) = _objects(ROOT / "k8s" / "overlays" / "train-7b")
    written = _covering_mount(gen, f"{gen_spec.runs_dir}/{gen_spec.name}/{DATA_FILE}")
    assert written == _covering_mount(train, train_spec.train.data) == ("alpaca-data", f"/{DATA_FILE}")
    train_mounts = train["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert [m.get("readOnly") for m in train_mounts if m["mountPath"] == "/shared/data"] == [True]


def test_prometheus_scrapes_the_service_the_serve_overlay_renders():
    import yaml

    prom = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "alpaca-serve"]
    (target,) = job["static_configs"][0]["targets"]
    svc = next(d for d in _objects(ROOT / "k8s" / "overlays" / "serve-7b") if d["kind"] == "Service")
    port = svc["spec"]["ports"][0]
    assert target == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{port['port']}"
    deploy = next(d for d in _objects(ROOT / "k8s" / "overlays" / "serve-7b") if d["kind"] == "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in [p["name"] for p in c["ports"]] and job["metrics_path"] == "/metrics"


def test_manifests_pin_the_image_keep_ttl_and_give_torchrun_the_grace_period():
    from alpaca_jobs.backends import k8s_objects as objs
    from alpaca_jobs.backends.k8s import fit_to_server
    from alpaca_jobs.spec import load_spec

    for overlay in JOB_OVERLAYS + APPLIED_OVERLAYS:
        for d in _objects(ROOT / "k8s" / "overlays" / overlay):
            if d["kind"] in ("Job", "Deployment"):
                image = d["spec"]["template"]["spec"]["containers"][0]["image"]
                assert image.endswith(":0.1.0") and "latest" not in image, (overlay, image)
    (job,) = _objects(ROOT / "k8s" / "overlays" / "train-7b")
    assert job["spec"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    assert "--shutdown-timeout=110" in job["spec"]["template"]["spec"]["containers"][0]["command"]  # grace 120 - 10
    assert objs.pinned_image("reg.example/team/alpaca-jobs/train:v3") == "reg.example/team/alpaca-jobs/train:v3"
    assert objs.pinned_image("localhost:5000/alpaca-jobs/train") == "localhost:5000/alpaca-jobs/train:0.1.0"
    loaded = load_spec(ROOT / "jobs/train.yaml", ["k8s.grace_seconds=300", "k8s.ttl_seconds_after_finished=60",
                                                  "image=reg.example/a/train:latest"])
    made = objs.to_dicts([objs.job(objs.pin(loaded), "r1", objs.pin(loaded).spec.image)])[0]
    assert made["metadata"]["name"] == "r1" and made["spec"]["ttlSecondsAfterFinished"] == 60
    c = made["spec"]["template"]["spec"]["containers"][0]
    assert "--shutdown-timeout=290" in c["command"] and c["image"] == "reg.example/a/train:0.1.0"
    assert "ttlSecondsAfterFinished" not in fit_to_server(json.loads(json.dumps(made)), (1, 20))["spec"]
    assert fit_to_server(made, (1, 21))["spec"]["ttlSecondsAfterFinished"] == 60


def test_serve_deployment_answers_and_cancel_scales_it_to_zero(ns, tmp_path):
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
    said = cli("cancel", "k8s-serve", "--runs-dir", str(tmp_path))
    assert said.returncode == 0 and "scaled to 0 replicas" in said.stdout, said.stdout + said.stderr
    _wait("k8s-serve", tmp_path, {"CANCELLED"}, timeout=30)
    assert _kubectl_json(ns, "deployment", "k8s-serve")["spec"]["replicas"] == 0  # kept, with its Service
    _kubectl("-n", ns, "get", "service", "k8s-serve")
    proc = cli("submit", "jobs/serve-local.yaml", "--cluster", "k8s", "--run-id", "k8s-serve",
               "--set", f"runs_dir={tmp_path}", "--set", f"k8s.namespace={ns}", "--set", f"serve.port={port}",
               "--set", f"serve.flags_db={tmp_path}/flags.db")
    assert proc.returncode == 0, proc.stderr
    assert _kubectl_json(ns, "deployment", "k8s-serve")["spec"]["replicas"] == 1  # the same run id scales it up
    assert "scaled to 0" in cli("cancel", "k8s-serve", "--runs-dir", str(tmp_path)).stdout


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


def test_logs_follow_streams_the_pod_log_to_the_end(ns, tmp_path):
    """`logs -f` on Kubernetes reads the pod's log through the client's streaming follow and
    returns when the run ends."""
    assert _submit(tmp_path, ns, "k8s-follow", "train.max_steps=4").returncode == 0
    proc = cli("logs", "k8s-follow", "--runs-dir", str(tmp_path), "-f", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "training completed at step 4/4" in proc.stdout
    assert proc.stdout.count("training from step 0 of 4") == 1  # streamed once, not re-read


def test_awkward_paths_submit_status_and_logs(ns, tmp_path):
    """Spaces, both quotes, ';', '#', '$', a backtick and a line break in the spec path and the
    run dir: the payload carries them as themselves to the pod, status and logs find the run."""
    where = tmp_path / AWKWARD
    where.mkdir()
    runs = where / "runs"
    proc = cli("submit", str(awkward_spec(where)), "--cluster", "k8s", "--run-id", "k8s-awkward",
               "--set", f"k8s.namespace={ns}", "--set", "train.max_steps=2")
    assert proc.returncode == 0, proc.stderr
    out = _wait("k8s-awkward", runs, {"COMPLETED", "FAILED"})
    assert "k8s-awkward: COMPLETED" in out, out + cli("logs", "k8s-awkward", "--runs-dir", str(runs)).stdout
    assert json.loads((runs / "k8s-awkward" / "run.json").read_text())["steps"] == 2
    logs = cli("logs", "k8s-awkward", "--runs-dir", str(runs))
    assert logs.returncode == 0 and "step 2/2" in logs.stdout, logs.stderr
