"""Checked-in files generated from the job specs must match what `make render` makes now."""

import pytest

from alpaca_jobs.backends.slurm import (
    SlurmBackend,
    node_python,
    render_script,
    sbatch_options,
    standalone_script,
)
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.spec import load_spec
from tests.conftest import ROOT, cli

RENDERED = {"slurm/train.sbatch": "jobs/train.yaml", "slurm/train-local.sbatch": "jobs/train-local.yaml"}


@pytest.mark.parametrize("path,spec", RENDERED.items())
def test_checked_in_sbatch_scripts_match_their_specs(path, spec):
    fresh = cli("render", spec).stdout
    assert (ROOT / path).read_text() == fresh, f"{path} drifted from {spec}: run `make render`"


def test_seven_b_recipe_asks_for_one_full_a100_node():
    text = (ROOT / "slurm/train.sbatch").read_text()
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --exclusive", "#SBATCH --time=06:00:00", "#SBATCH --signal=USR2@120",
                 "#SBATCH --requeue"):
        assert line + "\n" in text
    assert "python3 -u -m alpaca_jobs.runtime --spec jobs/train.yaml" in text
    assert "wckey" not in text and "{" + "this file}" not in text and "submitit.core" not in text


def test_render_is_pure_and_states_its_dependencies(tmp_path):
    """No Slurm and no files are needed to render; `after` becomes afterok + kill-on-invalid-dep."""
    import subprocess
    import sys

    code = ("from alpaca_jobs.backends.slurm import SlurmBackend; from alpaca_jobs.spec import load_spec; "
            "s = SlurmBackend().render(load_spec('jobs/train.yaml'), 'r1', after=['11', '12']); print(s.text, end='')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": str(tmp_path), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "#SBATCH --dependency=afterok:11:12\n#SBATCH --kill-on-invalid-dep=yes\n" in text
    assert "RUN_DIR=/shared/alpaca-jobs/runs/r1\n" in text and not any(tmp_path.iterdir())
    assert '-u -m alpaca_jobs.runtime --payload "$RUN_DIR/payload.json"\nrc=$?\n' in text
    assert "srun --unbuffered --kill-on-bad-exit=1 " in text  # one task dies: the step stops
    assert text.endswith('  scontrol requeue "$SLURM_JOB_ID"\nfi\nexit "$rc"\n')  # a lost task requeues
    assert text.count("\nsrun ") == 1 and "#" not in text.replace("#!/bin/bash", "").replace("#SBATCH", "")
    loaded = load_spec(ROOT / "jobs/train.yaml")
    plain = SlurmBackend().render(loaded, "r1")
    assert "--dependency" not in plain.text and plain.text == render_script(loaded.spec, "r1")


def test_only_a_backend_with_dependencies_takes_them():
    """The pipeline asks a backend's capabilities, not its name: where the scheduler cannot hold a
    job for another (local, Kubernetes), a dependency is refused, never silently dropped."""
    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.common.errors import UserError

    loaded = load_spec(ROOT / "jobs/train-local.yaml")
    assert get_backend("slurm").capabilities.dependencies
    for name in ("local", "k8s"):
        backend = get_backend(name)
        assert not backend.capabilities.dependencies
        with pytest.raises(UserError, match="cannot hold a job until others complete"):
            backend.render(loaded, "r3", after=["77"])


def test_dry_run_works_without_slurm(tmp_path):
    """`submit --cluster slurm --dry-run` on a laptop: no srun, sbatch or sinfo on PATH."""
    import sys

    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    for tool in ("srun", "sbatch", "sinfo", "scontrol"):
        assert not (bare / tool).exists()
    proc = cli("submit", "jobs/train.yaml", "--cluster", "slurm", "--dry-run", "--run-id", "r",
               env={"PATH": str(bare)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# dry run: slurm submission of jobs/train.yaml (nothing submitted)\n#!/bin/bash\n")
    assert "#SBATCH --gpus-per-node=8\n" in proc.stdout and "Traceback" not in proc.stderr


def test_site_names_and_containers_come_from_configuration():
    loaded = load_spec(ROOT / "jobs/train.yaml", [
        "slurm.partition=a100", "slurm.account=nlp", "slurm.qos=high", "slurm.exclusive=true",
        "slurm.gres_types={a100-80gb: a100_80g}", "slurm.constraint=ib", "resources.nodes=2",
        "slurm.extra_sbatch={reservation: alpaca}",
    ])
    p = sbatch_options(loaded.spec)
    assert p["gres"] == "gpu:a100_80g:8" and "gpus-per-node" not in p
    assert (p["partition"], p["account"], p["qos"], p["constraint"], p["nodes"]) == ("a100", "nlp", "high", "ib", 2)
    assert p["exclusive"] is True and p["reservation"] == "alpaca"
    text = standalone_script(loaded, "jobs/train.yaml")
    assert "#SBATCH --gres=gpu:a100_80g:8\n" in text and "#SBATCH --nodes=2\n" in text
    assert "#SBATCH --reservation=alpaca\n" in text and "#SBATCH --partition=a100\n" in text
    pyxis = load_spec(ROOT / "jobs/train.yaml", ["slurm.container.runtime=pyxis",
                                                 "slurm.container.image=nvcr.io#org/alpaca:1",
                                                 "slurm.container.mounts=[/shared:/shared]"])
    srun = next(x for x in render_script(pyxis.spec, "p").splitlines() if x.startswith("srun "))
    assert " --container-image='nvcr.io#org/alpaca:1' --container-mounts=/shared:/shared python3 -u -m " in srun
    apptainer = load_spec(ROOT / "jobs/train.yaml", ["slurm.container.runtime=apptainer",
                                                     "slurm.container.image=/images/train.sif"])
    assert node_python(apptainer.spec) == "apptainer exec --nv /images/train.sif python3"
    assert " apptainer exec --nv /images/train.sif python3 -u -m alpaca_jobs.runtime" in render_script(
        apptainer.spec, "a")
    own = load_spec(ROOT / "jobs/train.yaml", ["slurm.python=/opt/py/bin/python"])
    assert '.err" /opt/py/bin/python -u -m alpaca_jobs.runtime' in render_script(own.spec, "o")
    with pytest.raises(UserError, match="slurm option reservation: a line break"):
        render_script(load_spec(ROOT / "jobs/train.yaml", ['slurm.extra_sbatch={reservation: "a\\nb"}']).spec, "x")


K8S = {"k8s/overlays/train-7b/train.yaml": "jobs/train.yaml", "k8s/overlays/train-local/train.yaml": "jobs/train-local.yaml",
       "k8s/overlays/serve-7b/serve.yaml": "jobs/serve.yaml",
       "k8s/overlays/generate/generate.yaml": "jobs/generate.yaml"}


@pytest.mark.parametrize("path,spec", K8S.items())
def test_checked_in_manifests_match_their_specs(path, spec):
    fresh = cli("render", spec, "--cluster", "k8s").stdout
    assert (ROOT / path).read_text() == fresh, f"{path} drifted from {spec}: run `make render`"


@pytest.mark.parametrize("overlay", ["overlays/train-7b", "overlays/train-local", "overlays/serve-7b",
                                     "overlays/generate", "cluster"])
def test_every_overlay_is_valid_for_kubernetes_1_32_strict(overlay, tmp_path):
    import subprocess

    path = ROOT / "k8s" / overlay
    if (path / "kustomization.yaml").is_file():
        built = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    else:  # a Job overlay: one generateName Job, which kustomize cannot carry (kubectl create -f)
        built = "---\n".join(p.read_text() for p in sorted(path.glob("*.yaml")))
    import kubernetes_validate
    import yaml

    docs = [d for d in yaml.safe_load_all(built) if d]
    assert len(docs) >= 1
    for doc in docs:  # raises ValidationError (unknown field in strict mode, wrong type, ...)
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
    job = next(d for d in docs if d["kind"] in ("Job", "Deployment", "PersistentVolumeClaim"))
    job["spec"]["replicaz"] = 1  # the check can fail
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.32.0", strict=True)


def test_seven_b_job_asks_for_a_full_a100_node_securely():
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "k8s/overlays/train-7b/train.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} == {
        "alpaca-runs", "alpaca-data", "alpaca-models"}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "Ignore" and rules[0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] == 6 * 3600
    assert "--nproc-per-node=8" in c["command"]


def test_serve_deployment_has_probes_service_and_secret_refs():
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "k8s/overlays/serve-7b/serve.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ConfigMap", "Deployment", "Service"]
    c = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs["ALPACA_JOBS_API_KEYS"] == {"name": "alpaca-serve", "key": "api-keys"}
    assert docs[2]["spec"]["selector"] == {"alpaca-jobs/run-id": "alpaca-7b-serve"}


def test_one_variable_names_every_image(tmp_path):
    import os

    from alpaca_jobs.spec import image_for

    env = {"ALPACA_JOBS_IMAGE": "registry.example:5000/team/alpaca-jobs:v1.2"}
    assert image_for("train", env["ALPACA_JOBS_IMAGE"]) == "registry.example:5000/team/alpaca-jobs/train:v1.2"
    manifests = cli("render", "jobs/serve.yaml", "--cluster", "k8s", env=env).stdout
    assert "image: registry.example:5000/team/alpaca-jobs/serve:v1.2" in manifests
    dry = cli("submit", "jobs/train.yaml", "--cluster", "k8s", "--dry-run", env=env).stdout
    assert "image: registry.example:5000/team/alpaca-jobs/train:v1.2" in dry
    assert "image: my/own:1" in cli("submit", "jobs/train.yaml", "--cluster", "k8s", "--dry-run",
                                   "--set", "image=my/own:1", env=env).stdout  # a spec's own image wins
    made = __import__("subprocess").run(["make", "-n", "images", "IMAGE=reg/x:v9"], cwd=ROOT, capture_output=True,
                                        text=True, env={**os.environ, "PATH": os.environ["PATH"]}).stdout
    assert "${ALPACA_JOBS_IMAGE%:*}/$t:${ALPACA_JOBS_IMAGE##*:}" in made


def test_metrics_sinks_reach_the_jobs_environment():
    """k8s.pushgateway becomes the pods' ALPACA_JOBS_PUSHGATEWAY; slurm.textfile_dir an export
    in the batch script (where the jobs' metrics go: dashboards/README.md)."""
    import yaml

    from alpaca_jobs.backends.k8s_objects import manifests
    from alpaca_jobs.spec import load_spec

    spec = ROOT / "jobs" / "generate.yaml"
    loaded = load_spec(spec, ["k8s.pushgateway=http://pushgateway.monitoring:9091",
                              "slurm.textfile_dir=/var/lib/node_exporter/text files"])
    job = next(d for d in yaml.safe_load_all(manifests(loaded, str(spec))) if d and d["kind"] == "Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ALPACA_JOBS_PUSHGATEWAY"]["value"] == "http://pushgateway.monitoring:9091"
    assert "value" not in env["OPENAI_API_KEY"] and env["OPENAI_API_KEY"]["valueFrom"]
    assert "\nexport ALPACA_JOBS_TEXTFILE_DIR='/var/lib/node_exporter/text files'\n" in render_script(loaded.spec, "g")
    off = load_spec(spec, ["k8s.pushgateway=null", "slurm.textfile_dir=null"])
    assert "ALPACA_JOBS_PUSHGATEWAY" not in manifests(off, str(spec))
    assert "ALPACA_JOBS_TEXTFILE_DIR" not in render_script(off.spec, "g")


def test_kubernetes_render_reads_no_kubeconfig(tmp_path):
    """Rendering is pure, as Slurm's is: the objects carry the spec's namespace or none (submit
    then sends them to the kubeconfig context's namespace, as kubectl apply would)."""
    import yaml

    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "from-kubeconfig"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}], "users": [{"name": "u", "user": {}}]}))
    env = {"KUBECONFIG": str(config)}
    dry = cli("submit", "jobs/train-local.yaml", "--cluster", "k8s", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    docs = [d for d in yaml.safe_load_all(dry.stdout) if d]
    assert docs and all("namespace" not in d["metadata"] for d in docs) and "from-kubeconfig" not in dry.stdout
    mine = cli("submit", "jobs/train-local.yaml", "--cluster", "k8s", "--dry-run", "--set", "k8s.namespace=team-a", env=env)
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(mine.stdout) if d} == {"team-a"}


def test_the_cli_lists_backends_from_the_registry():
    """`render --cluster` offers the backends that render plain files, as the registry names them."""
    from alpaca_jobs.backends import BACKENDS, RENDERS_PLAIN, get_backend
    from alpaca_jobs.backends.base import Backend

    plain = {n for n in BACKENDS if type(get_backend(n)).render_plain is not Backend.render_plain}
    assert plain == set(RENDERS_PLAIN)
    assert "[slurm|k8s]" in cli("render", "--help").stdout


TWO_K8S_NODES = ["--set", "resources.nodes=2", "--set", "resources.processes_per_node=1",
                 "--set", "runs_dir=/shared/runs", "--set", "k8s.volumes=[{claim: runs, mount: /shared/runs}]"]


def test_two_node_kubernetes_renderings_indexed_and_one_job_per_node():
    """Both renderings of a two-node run: an Indexed Job (servers 1.22+) and one Job per node
    (older ones), each with the headless Service pod 0's hostname resolves under; both valid
    for 1.32 (strict); pods learn their rank from the cluster and meet at pod 0."""
    import json

    import kubernetes_validate

    from alpaca_jobs.backends.k8s import K8sBackend

    loaded = load_spec("jobs/train-local.yaml", TWO_K8S_NODES[1::2])
    sub = K8sBackend().render(loaded, "two")
    assert sub.nodes == 2 and sub.ranks == 2
    for objects in (sub.objects, sub.per_node):
        for obj in objects:
            kubernetes_validate.validate(obj, "1.32.0", strict=True)
        svc = next(o for o in objects if o["kind"] == "Service")
        assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["name"] == "two"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        payload = json.loads(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["payload.json"])
        assert payload["launch"]["nodes"] == 2 and payload["launch"]["rendezvous"]["host"] == "two-0.two"
        for job in (o for o in objects if o["kind"] == "Job"):
            pod = job["spec"]["template"]["spec"]
            cmd = pod["containers"][0]["command"]
            assert pod["subdomain"] == "two"
            assert cmd[:4] == ["python", "-m", "alpaca_jobs.backends.k8s_rendezvous", "two-0.two"]
            assert {"--nnodes=2", "--nproc-per-node=1", "--node-rank=$(NODE_RANK)", "--master-addr=two-0.two",
                    "--max-restarts=0"} <= set(cmd)
    indexed = [o for o in sub.objects if o["kind"] == "Job"]
    assert len(indexed) == 1 and indexed[0]["spec"]["completionMode"] == "Indexed"
    assert indexed[0]["spec"]["completions"] == indexed[0]["spec"]["parallelism"] == 2
    env = indexed[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    rank = next(e for e in env if e["name"] == "NODE_RANK")
    assert "job-completion-index" in rank["valueFrom"]["fieldRef"]["fieldPath"]
    per_node = [o for o in sub.per_node if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in per_node] == ["two-0", "two-1"]
    for i, job in enumerate(per_node):
        pod = job["spec"]["template"]
        assert pod["spec"]["hostname"] == f"two-{i}" and pod["metadata"]["labels"]["alpaca-jobs/node"] == str(i)
        assert {"name": "NODE_RANK", "value": str(i)} in pod["spec"]["containers"][0]["env"]
    # The dry run shows the Indexed rendering and says what older servers get.
    dry = cli("submit", "jobs/train-local.yaml", "--cluster", "k8s", "--dry-run", *TWO_K8S_NODES)
    assert dry.returncode == 0, dry.stderr
    assert "one Job per node, two-0..1" not in dry.stdout and "older servers get one Job per node" in dry.stdout
    plain = K8sBackend().render_plain(loaded, "jobs/train-local.yaml")  # `alpaca-jobs render`
    assert "completionMode: Indexed" in plain and "--master-addr=alpaca-tiny-0.alpaca-tiny" in plain


def test_two_nodes_without_a_shared_runs_volume_are_refused_before_anything():
    proc = cli("submit", "jobs/train-local.yaml", "--cluster", "k8s", "--dry-run", "--set", "resources.nodes=2")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "runs_dir" in proc.stderr and "ReadWriteMany" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
