"""Kubernetes objects for a job spec, built from the official client's models (pure functions).

A training run is a ConfigMap (the resolved spec, as the worker's payload) and a batch/v1
Job whose one pod runs ``torchrun --standalone`` with one worker per GPU. Restricted pod
security, a memory-backed /dev/shm, PVCs for runs/data/models (a restarted pod resumes from
the last checkpoint on the PVC), preemption not counted against retries.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k

from alpaca_jobs.backends.naming import k8s_memory, translate
from alpaca_jobs.common import kinds
from alpaca_jobs.job import Payload
from alpaca_jobs.launch import Launch, RankSource, plan_launch
from alpaca_jobs.spec import JobSpec, LoadedSpec

PAYLOAD_DIR = "/etc/alpaca-jobs"
PART_OF = "alpaca-jobs"
PAYLOAD_ANNOTATION = "alpaca-jobs/payload.json"  # a checked-in Job carries its payload itself
EXIT_USER_ERROR = 2  # the worker's exit code for bad input: retrying cannot help
SHUTDOWN_MARGIN_S = 10  # torchrun SIGKILLs its workers this long before the kubelet would


def labels(spec: JobSpec, run_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": PART_OF,
        "app.kubernetes.io/instance": run_id,
        "app.kubernetes.io/component": spec.job,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "alpaca-jobs",
        "alpaca-jobs/run-id": run_id,
        "alpaca-jobs/stage": spec.job,
    }


def worker_command(spec: JobSpec) -> list[str]:
    """The job runtime on the mounted payload: one process, or torchrun with one per GPU."""
    run = ["-m", "alpaca_jobs.runtime", "--payload", f"{PAYLOAD_DIR}/payload.json"]
    if not kinds.get(spec.job).per_gpu:
        return ["python", *run]
    # torchrun's own SIGTERM -> SIGKILL wait (--shutdown-timeout, default 30 s) must not cut a
    # checkpoint short before the pod's grace period does: derive it from grace_seconds.
    shutdown = max(1, spec.k8s.grace_seconds - SHUTDOWN_MARGIN_S)
    return ["python", "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={spec.resources.procs_per_node}", f"--shutdown-timeout={shutdown}", *run]


def pinned_image(image: str) -> str:
    """Never ``:latest`` in a manifest: with imagePullPolicy IfNotPresent each node keeps
    whichever ``latest`` it pulled first. An untagged or ``latest`` image gets the package's
    version (what `make images IMAGE=<repo>:<version>` tags); any other tag is kept."""
    from alpaca_jobs import __version__

    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return f"{image}:{__version__}"
    return f"{repo}:{__version__}" if tag == "latest" else image


def pin(loaded: LoadedSpec) -> LoadedSpec:
    """The spec with its image pinned (the payload then names the image the pod runs)."""
    import dataclasses

    if not loaded.spec.image:
        return loaded
    spec = loaded.spec.model_copy(update={"image": pinned_image(loaded.spec.image)})
    return dataclasses.replace(loaded, spec=spec)


def _resources(spec: JobSpec) -> k.V1ResourceRequirements:
    params = translate("k8s", spec)
    req = {"cpu": params["cpu"], "memory": params["memory"]}
    if params["nvidia.com/gpu"]:
        req["nvidia.com/gpu"] = str(params["nvidia.com/gpu"])
    return k.V1ResourceRequirements(requests=req, limits=dict(req))


def _env(spec: JobSpec) -> list[k.V1EnvVar]:
    env = [k.V1EnvVar(name="HF_HUB_OFFLINE", value="1"),
           k.V1EnvVar(name="OMP_NUM_THREADS", value=str(spec.resources.cpus_per_process))]
    if spec.k8s.pushgateway:
        env.append(k.V1EnvVar(name="ALPACA_JOBS_PUSHGATEWAY", value=spec.k8s.pushgateway))
    for name, ref in sorted(spec.k8s.secret_env.items()):  # values stay in the Secret
        env.append(k.V1EnvVar(name=name, value_from=k.V1EnvVarSource(
            secret_key_ref=k.V1SecretKeySelector(name=ref.secret, key=ref.key))))
    return env


def _payload_volume(config_map: str | None) -> k.V1Volume:
    """The run's ConfigMap, or (config_map None) the pod's own annotation through the
    Downward API: a Job made by generateName cannot name a ConfigMap of its own."""
    if config_map:
        return k.V1Volume(name="payload", config_map=k.V1ConfigMapVolumeSource(name=config_map))
    return k.V1Volume(name="payload", downward_api=k.V1DownwardAPIVolumeSource(items=[k.V1DownwardAPIVolumeFile(
        path="payload.json", field_ref=k.V1ObjectFieldSelector(field_path=f"metadata.annotations['{PAYLOAD_ANNOTATION}']"))]))


def _volumes(spec: JobSpec, config_map: str | None) -> tuple[list[k.V1Volume], list[k.V1VolumeMount]]:
    vols = [
        _payload_volume(config_map),
        k.V1Volume(name="dshm", empty_dir=k.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=k8s_memory(spec.k8s.shm_gb))),
    ]
    mounts = [k.V1VolumeMount(name="payload", mount_path=PAYLOAD_DIR, read_only=True),
              k.V1VolumeMount(name="dshm", mount_path="/dev/shm")]
    for i, c in enumerate(spec.k8s.volumes):
        vols.append(k.V1Volume(name=f"pvc-{i}", persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
            claim_name=c.claim, read_only=c.read_only)))
        mounts.append(k.V1VolumeMount(name=f"pvc-{i}", mount_path=c.mount, read_only=c.read_only))
    return vols, mounts


def _placement(spec: JobSpec) -> dict[str, Any]:
    if not spec.resources.gpus_per_node:
        return {}
    product = spec.k8s.gpu_products.get(spec.resources.gpu_type or "")
    return {
        "node_selector": {"nvidia.com/gpu.product": product} if product else None,
        "tolerations": [k.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
    }


def payload_json(loaded: LoadedSpec, run_id: str, run_dir: str, launch: Launch | None = None) -> str:
    # One node: torchrun --standalone sets the env:// variables; more: k8s_nodes.launch.
    launch = launch or plan_launch(loaded, RankSource.SINGLE)
    return json.dumps(Payload.build(loaded, run_id, "k8s", run_dir, launch).to_dict(), indent=1, sort_keys=True)


def config_map(loaded: LoadedSpec, run_id: str, run_dir: str, launch: Launch | None = None) -> k.V1ConfigMap:
    return k.V1ConfigMap(
        api_version="v1", kind="ConfigMap",
        metadata=k.V1ObjectMeta(name=f"{run_id}-spec", labels=labels(loaded.spec, run_id)),
        data={"payload.json": payload_json(loaded, run_id, run_dir, launch)},
    )


def _pod(loaded: LoadedSpec, run_id: str, image: str, restart: str, own_payload: bool = False,
         command: list[str] | None = None, env: list[k.V1EnvVar] | None = None) -> k.V1PodSpec:
    spec = loaded.spec
    vols, mounts = _volumes(spec, None if own_payload else f"{run_id}-spec")
    container = k.V1Container(
        name=spec.job, image=image, image_pull_policy=spec.k8s.image_pull_policy,
        command=command or worker_command(spec), env=[*(env or []), *_env(spec)], resources=_resources(spec),
        volume_mounts=mounts,
        security_context=k.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k.V1Capabilities(drop=["ALL"]),
            run_as_non_root=True, seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault")),
    )
    service = kinds.get(spec.job).service
    if service is not None:
        container.ports = [k.V1ContainerPort(name="http", container_port=service.port(spec))]

        def probe(path: str, **kw) -> k.V1Probe:
            return k.V1Probe(http_get=k.V1HTTPGetAction(path=path, port="http"), **kw)
        # Loading a model takes minutes: the startup probe allows 10 before liveness counts.
        container.startup_probe = probe(service.health_path, period_seconds=10, failure_threshold=60)
        container.liveness_probe = probe(service.health_path, period_seconds=20, failure_threshold=3)
        container.readiness_probe = probe(service.ready_path, period_seconds=5, failure_threshold=2)
    return k.V1PodSpec(
        restart_policy=restart, containers=[container], volumes=vols,
        automount_service_account_token=False, service_account_name=spec.k8s.service_account,
        termination_grace_period_seconds=spec.k8s.grace_seconds,
        priority_class_name=spec.k8s.priority_class,
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=spec.k8s.run_as_user, run_as_group=spec.k8s.run_as_user,
            fs_group=spec.k8s.run_as_user, seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault")),
        **_placement(spec),
    )


def job(loaded: LoadedSpec, run_id: str, image: str, generate_name: bool = False, *, name: str | None = None,
        command: list[str] | None = None, env: list[k.V1EnvVar] | None = None) -> k.V1Job:
    """generate_name: the checked-in manifests' Job, ``<name>-<random>`` per `kubectl create`,
    self-contained (its payload in its pod template's annotation, no ConfigMap to collide).
    ``name``, ``command``, ``env``: one node's Job of a multi-node run (k8s_nodes.py)."""
    spec = loaded.spec
    failure_policy = k.V1PodFailurePolicy(rules=[
        # Preemption, eviction, node drain: not the job's fault, do not count it.
        k.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            k.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
        # Bad input: the next pod would fail the same way.
        k.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=k.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=spec.job, operator="In", values=[EXIT_USER_ERROR])),
    ])
    meta = (k.V1ObjectMeta(generate_name=f"{run_id}-", labels=labels(spec, run_id)) if generate_name
            else k.V1ObjectMeta(name=name or run_id, labels=labels(spec, run_id)))
    pod_meta = k.V1ObjectMeta(labels=labels(spec, run_id))
    if generate_name:
        pod_meta.annotations = {PAYLOAD_ANNOTATION: payload_json(loaded, run_id, f"{spec.runs_dir}/{run_id}")}
    return k.V1Job(
        api_version="batch/v1", kind="Job", metadata=meta,
        spec=k.V1JobSpec(
            backoff_limit=spec.k8s.backoff_limit,
            active_deadline_seconds=translate("k8s", spec)["active_deadline_seconds"],
            ttl_seconds_after_finished=spec.k8s.ttl_seconds_after_finished,
            pod_failure_policy=failure_policy,
            template=k.V1PodTemplateSpec(metadata=pod_meta,
                                         spec=_pod(loaded, run_id, image, "Never", generate_name, command, env)),
        ),
    )


def deployment(loaded: LoadedSpec, run_id: str, image: str) -> k.V1Deployment:
    """The serve job: one replica (one model on one GPU), replaced, not patched, on change."""
    spec = loaded.spec
    return k.V1Deployment(
        api_version="apps/v1", kind="Deployment",
        metadata=k.V1ObjectMeta(name=run_id, labels=labels(spec, run_id)),
        spec=k.V1DeploymentSpec(
            replicas=1, strategy=k.V1DeploymentStrategy(type="Recreate"),
            selector=k.V1LabelSelector(match_labels={"alpaca-jobs/run-id": run_id}),
            template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels(spec, run_id)),
                                         spec=_pod(loaded, run_id, image, "Always")),
        ),
    )


def service(loaded: LoadedSpec, run_id: str) -> k.V1Service:
    return k.V1Service(
        api_version="v1", kind="Service",
        metadata=k.V1ObjectMeta(name=run_id, labels=labels(loaded.spec, run_id)),
        spec=k.V1ServiceSpec(selector={"alpaca-jobs/run-id": run_id},
                             ports=[k.V1ServicePort(name="http", port=80, target_port="http")]),
    )


def workload(loaded: LoadedSpec, run_id: str, image: str, generate_name: bool = False) -> list:
    """The objects of one run, the owner first: [Job] or [Deployment, Service]."""
    if kinds.get(loaded.spec.job).long_running:
        return [deployment(loaded, run_id, image), service(loaded, run_id)]
    return [job(loaded, run_id, image, generate_name)]


def to_dicts(objs: list[Any]) -> list[dict[str, Any]]:
    return [k.ApiClient().sanitize_for_serialization(o) for o in objs]


def to_yaml(objs: list[Any]) -> str:
    """YAML for people: multi-line strings (the payload) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return "---\n".join(yaml.dump(d, Dumper=Dumper, sort_keys=False) for d in to_dicts(objs))


def manifests(loaded: LoadedSpec, spec_arg: str) -> str:
    """Checked-in manifests: the run id is the spec's name, no namespace, the image pinned
    (never ``:latest``). A Job is one self-contained object with generateName, for
    `kubectl create -n NS -f` (kustomize cannot carry generateName: kubernetes-sigs/kustomize
    #641); a server is ConfigMap + Deployment + Service for `kubectl apply -k`."""
    loaded = pin(loaded)
    run_id = loaded.spec.name
    run_dir = f"{loaded.spec.runs_dir}/{run_id}"
    shown = spec_arg.replace("\r", "\\r").replace("\n", "\\n")  # the comment stays one line
    head = f"# Generated from {shown} by `make render`; edit the spec, not this file.\n"
    if kinds.get(loaded.spec.job).long_running:
        return head + to_yaml([config_map(loaded, run_id, run_dir), *workload(loaded, run_id, loaded.spec.image)])
    how = ("# A Job per run (generateName), so create, not apply:  kubectl create -n alpaca-jobs -f <this file>\n"
           "# Its payload is in the pod template's annotation (no ConfigMap): see docs/kubernetes.md.\n")
    return head + how + to_yaml([job(loaded, run_id, loaded.spec.image, generate_name=True)])
