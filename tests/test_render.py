"""Checked-in files generated from the job specs must match what `make render` makes now."""

import pytest

from alpaca_jobs.backends.slurm import executor_params, node_python, standalone_script
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
                 "#SBATCH --signal=USR2@120", "#SBATCH --requeue"):
        assert line in text
    assert "alpaca_jobs.runtime --spec jobs/train.yaml" in text


def test_site_names_and_containers_come_from_configuration():
    loaded = load_spec(ROOT / "jobs/train.yaml", [
        "slurm.partition=a100", "slurm.account=nlp", "slurm.qos=high", "slurm.exclusive=true",
        "slurm.gres_types={a100-80gb: a100_80g}", "slurm.constraint=ib", "resources.nodes=2",
        "slurm.extra_sbatch={reservation: alpaca}",
    ])
    p = executor_params(loaded.spec)
    assert p["gres"] == "gpu:a100_80g:8" and "gpus_per_node" not in p
    assert (p["partition"], p["account"], p["qos"], p["constraint"], p["nodes"]) == ("a100", "nlp", "high", "ib", 2)
    assert p["exclusive"] is True and p["additional_parameters"]["reservation"] == "alpaca"
    text = standalone_script(loaded, "jobs/train.yaml")
    assert "#SBATCH --gres=gpu:a100_80g:8" in text and "#SBATCH --nodes=2" in text
    pyxis = load_spec(ROOT / "jobs/train.yaml", ["slurm.container.runtime=pyxis",
                                                 "slurm.container.image=nvcr.io#org/alpaca:1",
                                                 "slurm.container.mounts=[/shared:/shared]"])
    assert executor_params(pyxis.spec)["srun_args"] == [
        "--container-image", "nvcr.io#org/alpaca:1", "--container-mounts", "/shared:/shared"]
    apptainer = load_spec(ROOT / "jobs/train.yaml", ["slurm.container.runtime=apptainer",
                                                     "slurm.container.image=/images/train.sif"])
    assert node_python(apptainer.spec) == "apptainer exec --nv /images/train.sif python3"


def test_dry_run_prints_the_sbatch_script_submitit_writes():
    proc = cli("submit", "jobs/train.yaml", "--cluster", "slurm", "--dry-run", "--run-id", "r")
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --gpus-per-node=8" in proc.stdout and "-m submitit.core._submit" in proc.stdout


K8S = {"k8s/overlays/train-7b/train.yaml": "jobs/train.yaml", "k8s/overlays/train-local/train.yaml": "jobs/train-local.yaml",
       "k8s/overlays/serve-7b/serve.yaml": "jobs/serve.yaml",
       "k8s/overlays/generate/generate.yaml": "jobs/generate.yaml"}


@pytest.mark.parametrize("path,spec", K8S.items())
def test_checked_in_manifests_match_their_specs(path, spec):
    fresh = cli("render", spec, "--cluster", "k8s").stdout
    assert (ROOT / path).read_text() == fresh, f"{path} drifted from {spec}: run `make render`"


@pytest.mark.parametrize("overlay", ["train-7b", "train-local", "serve-7b", "generate"])
def test_every_overlay_is_valid_for_kubernetes_1_32_strict(overlay, tmp_path):
    import subprocess

    built = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s/overlays" / overlay)],
                           capture_output=True, text=True, check=True).stdout
    import kubernetes_validate
    import yaml

    docs = [d for d in yaml.safe_load_all(built) if d]
    assert len(docs) >= 4
    for doc in docs:  # raises ValidationError (unknown field in strict mode, wrong type, ...)
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
    job = next(d for d in docs if d["kind"] in ("Job", "Deployment"))
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
    from alpaca_jobs.backends.slurm import executor_params
    from alpaca_jobs.spec import load_spec

    spec = ROOT / "jobs" / "generate.yaml"
    loaded = load_spec(spec, ["k8s.pushgateway=http://pushgateway.monitoring:9091",
                              "slurm.textfile_dir=/var/lib/node_exporter/text files"])
    job = next(d for d in yaml.safe_load_all(manifests(loaded, str(spec))) if d and d["kind"] == "Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ALPACA_JOBS_PUSHGATEWAY"]["value"] == "http://pushgateway.monitoring:9091"
    assert "value" not in env["OPENAI_API_KEY"] and env["OPENAI_API_KEY"]["valueFrom"]
    setup = executor_params(loaded.spec)["setup"]
    assert "export ALPACA_JOBS_TEXTFILE_DIR='/var/lib/node_exporter/text files'" in setup
    off = load_spec(spec, ["k8s.pushgateway=null", "slurm.textfile_dir=null"])
    assert "ALPACA_JOBS_PUSHGATEWAY" not in manifests(off, str(spec))
    assert "ALPACA_JOBS_TEXTFILE_DIR" not in str(executor_params(off.spec).get("setup"))
