"""More than one node on Kubernetes: N pods that find each other through the cluster's own
objects (pure functions, like k8s_objects.py).

- A headless Service named after the run gives every pod a stable DNS name,
  ``<run>-<i>.<run>`` (the pod's hostname under the Service's subdomain). Pod 0's is the
  rendezvous: torchrun's static rendezvous (``--master-addr``, ``--node-rank``) on port 29500.
  Static, not c10d: the number of nodes is fixed, and every node knows its rank from the
  cluster, so there is nothing to elect.
- The node rank comes from the pod. Servers 1.22+ run one Indexed Job (``completionMode:
  Indexed``; the pod's completion index, read through the Downward API, is the rank, and the
  controller names each pod's hostname ``<job>-<index>``). Older servers run one Job per node,
  ``<run>-<i>``, its rank and hostname written into its own pod template. Both are rendered;
  ``submit`` picks by the server's version.
- Before torchrun starts, each pod waits until pod 0's name resolves (``k8s_rendezvous``):
  the cluster's DNS lists a pod only once it runs, as Kubeflow's PyTorchJob waits in an init
  container.
- When any pod fails, its workers' peers lose it in their next collective and fail too, so
  the whole set restarts (each Job's backoff) and resumes from the last checkpoint on the
  shared volume; never half a job. A Job that has failed for good makes ``status`` stop the
  rest. The runs directory must be a ReadWriteMany claim: checked before submitting.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k

from alpaca_jobs.backends import k8s_objects as objs
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.launch import DEFAULT_RDZV_PORT, Launch, RankSource, plan_launch
from alpaca_jobs.spec import JobSpec, LoadedSpec

INDEXED_SINCE = (1, 22)  # batch/v1 Indexed Jobs beta and on by default (alpha behind a gate in 1.21)
NODE_LABEL = "alpaca-jobs/node"  # a one-Job-per-node pod's node rank
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # an Indexed Job pod's
SHARED = "ReadWriteMany"


def multi_node(spec: JobSpec) -> bool:
    return kinds.get(spec.job).per_gpu and spec.resources.nodes > 1


def master_host(run_id: str) -> str:
    """Pod 0's name under the run's headless Service (resolvable in the run's namespace)."""
    return f"{run_id}-0.{run_id}"


def launch(loaded: LoadedSpec, run_id: str, per_node: bool) -> Launch:
    source = RankSource.JOB_PER_NODE if per_node else RankSource.COMPLETION_INDEX
    return plan_launch(loaded, source, max_restarts=loaded.spec.k8s.backoff_limit, host=master_host(run_id))


def torchrun(spec: JobSpec, run_id: str) -> list[str]:
    """Wait for pod 0's name, then torchrun on this node; its rank from $(NODE_RANK), which the
    kubelet expands from the pod's environment."""
    host, res = master_host(run_id), spec.resources
    shutdown = max(1, spec.k8s.grace_seconds - objs.SHUTDOWN_MARGIN_S)
    return ["python", "-m", "alpaca_jobs.backends.k8s_rendezvous", host, "--",
            "python", "-m", "torch.distributed.run", f"--nnodes={res.nodes}",
            f"--nproc-per-node={res.procs_per_node}", "--node-rank=$(NODE_RANK)",
            f"--master-addr={host}", f"--master-port={DEFAULT_RDZV_PORT}", "--max-restarts=0",
            f"--shutdown-timeout={shutdown}",
            "-m", "alpaca_jobs.runtime", "--payload", f"{objs.PAYLOAD_DIR}/payload.json"]


def headless_service(loaded: LoadedSpec, run_id: str) -> k.V1Service:
    """DNS for the run's pods (no virtual IP); pods are listed before they are Ready, since
    training pods have no readiness probe and must meet as soon as they start."""
    return k.V1Service(
        api_version="v1", kind="Service",
        metadata=k.V1ObjectMeta(name=run_id, labels=objs.labels(loaded.spec, run_id)),
        spec=k.V1ServiceSpec(cluster_ip="None", publish_not_ready_addresses=True,
                             selector={"alpaca-jobs/run-id": run_id},
                             ports=[k.V1ServicePort(name="rendezvous", port=DEFAULT_RDZV_PORT)]),
    )


def indexed_job(loaded: LoadedSpec, run_id: str, image: str, generate_name: bool = False) -> k.V1Job:
    """One Job, N completions, one pod per index (servers 1.22+)."""
    nodes = loaded.spec.resources.nodes
    rank = k.V1EnvVar(name="NODE_RANK", value_from=k.V1EnvVarSource(field_ref=k.V1ObjectFieldSelector(
        field_path=f"metadata.annotations['{INDEX_ANNOTATION}']")))
    job = objs.job(loaded, run_id, image, generate_name, command=torchrun(loaded.spec, run_id), env=[rank])
    job.spec.completion_mode, job.spec.completions, job.spec.parallelism = "Indexed", nodes, nodes
    # The backoff limit counts every pod's failure: a set restart fails each of the N pods.
    job.spec.backoff_limit = loaded.spec.k8s.backoff_limit * nodes
    job.spec.template.spec.subdomain = run_id
    return job


def per_node_jobs(loaded: LoadedSpec, run_id: str, image: str) -> list[k.V1Job]:
    """Job ``<run>-<i>`` for node i (servers before 1.22): rank and hostname in its template."""
    jobs = []
    for i in range(loaded.spec.resources.nodes):
        job = objs.job(loaded, run_id, image, name=f"{run_id}-{i}", command=torchrun(loaded.spec, run_id),
                       env=[k.V1EnvVar(name="NODE_RANK", value=str(i))])
        pod = job.spec.template
        pod.metadata.labels = {**pod.metadata.labels, NODE_LABEL: str(i)}
        pod.spec.hostname, pod.spec.subdomain = f"{run_id}-{i}", run_id
        jobs.append(job)
    return jobs


def workload(loaded: LoadedSpec, run_id: str, run_dir: str, image: str, per_node: bool) -> list[Any]:
    """[ConfigMap, Job(s)..., headless Service]: one rendering."""
    cm = objs.config_map(loaded, run_id, run_dir, launch(loaded, run_id, per_node))
    jobs = per_node_jobs(loaded, run_id, image) if per_node else [indexed_job(loaded, run_id, image)]
    return [cm, *jobs, headless_service(loaded, run_id)]


def node_of(pod: Any) -> int:
    """A pod's node rank (0 for a one-node run's pod)."""
    meta = pod.metadata
    value = (meta.labels or {}).get(NODE_LABEL) or (meta.annotations or {}).get(INDEX_ANNOTATION) or "0"
    return int(value)


def shared_claim(loaded: LoadedSpec) -> str:
    """The claim the runs directory is on (checkpoints must be seen by every pod), or a
    one-line refusal. Pure: what the server says of the claim is ``check_shared``'s."""
    spec = loaded.spec
    runs = spec.runs_dir.rstrip("/") + "/"
    on = [c for c in spec.k8s.volumes if runs.startswith(c.mount.rstrip("/") + "/") and not c.read_only]
    if not on:
        raise UserError(f"{loaded.path}: resources.nodes is {spec.resources.nodes} but runs_dir {spec.runs_dir} "
                        "is on no writable k8s.volumes claim: every pod must read and write the same "
                        "checkpoints; mount a ReadWriteMany claim at (or above) runs_dir")
    return max(on, key=lambda c: len(c.mount)).claim


def check_shared(loaded: LoadedSpec, claim: str, ns: str, pvc: Any) -> None:
    """``pvc``: the server's PersistentVolumeClaim (None: not found)."""
    nodes = loaded.spec.resources.nodes
    if pvc is None:
        raise UserError(f"{loaded.path}: k8s.volumes claim {claim} (runs_dir) does not exist in namespace "
                        f"{ns}; create it (ReadWriteMany) first, e.g. from k8s/cluster/pvcs.yaml")
    modes = set((pvc.status.access_modes if pvc.status and pvc.status.access_modes else None)
                or pvc.spec.access_modes or [])
    if SHARED not in modes:
        raise UserError(f"{loaded.path}: claim {claim} (runs_dir) is {', '.join(sorted(modes)) or 'of no access mode'}, "
                        f"not {SHARED}: {nodes} pods on different nodes cannot all mount it; use a "
                        "ReadWriteMany storage class (NFS, CephFS, EFS, Filestore) for the runs claim")


def manifests(loaded: LoadedSpec, spec_arg: str) -> str:
    """Checked-in manifests of a multi-node run: ConfigMap, Indexed Job and headless Service
    named after the spec (pod hostnames come from the Job's name, so no generateName), for
    `kubectl apply` on servers 1.22+; one run per name at a time."""
    loaded = objs.pin(loaded)
    run_id = loaded.spec.name
    shown = spec_arg.replace("\r", "\\r").replace("\n", "\\n")  # the comment stays one line
    head = (f"# Generated from {shown} by `alpaca-jobs render`; edit the spec, not this file.\n"
            f"# {loaded.spec.resources.nodes} nodes: an Indexed Job (servers 1.22+) and a headless Service; "
            f"one run of {run_id} at a time\n# (kubectl delete -f <this file> before the next). "
            "`alpaca-jobs submit --cluster k8s` also handles older servers.\n")
    objects = workload(loaded, run_id, f"{loaded.spec.runs_dir}/{run_id}", loaded.spec.image, per_node=False)
    return head + objs.to_yaml(objects)
