"""Kubernetes backend: the official client, the current kubeconfig context and namespace.

render is pure: the objects carry the spec's ``k8s.namespace``, or none; submit sends them to
that namespace, else to the kubeconfig context's (read then, as ``kubectl apply`` does).

submit = create the run's ConfigMap and Job (the Job owns the ConfigMap, so deleting the
Job cleans both); status = the Job's conditions; logs = the newest pod's log, or the copy
kept under the run dir once its pod is gone; cancel = *suspend* the Job, never delete it:
``spec.suspend: true`` on servers 1.22+ (batch/v1 Job suspend is beta and on by default
there; alpha behind a feature gate in 1.21), ``parallelism: 0`` before. Either way the Job
controller deletes the running pod (SIGTERM: workers checkpoint within the grace period)
and keeps the Job with its status; cancel copies the pods' logs into ``<run dir>/logs/``
while they stop. A Deployment (serve) is scaled to 0 replicas. ``submit --run-id`` of a
suspended run un-suspends it (of a deleted one, creates it again). A multi-node run
(k8s_nodes.py) is N pods of one Indexed Job, or of N Jobs on servers before 1.22: status, logs
and cancel treat them as one run.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpaca_jobs.backends import k8s_nodes
from alpaca_jobs.backends import k8s_objects as objs
from alpaca_jobs.backends.base import Backend, JobHandle, Submission
from alpaca_jobs.backends.states import State
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.spec import LoadedSpec


def _api():
    from kubernetes import client, config

    try:
        config.load_kube_config()
    except Exception as exc:  # no kubeconfig, bad context: say so plainly
        raise UserError(f"CLUSTER=k8s: cannot load a kubeconfig ({exc}); set KUBECONFIG") from None
    return client


def context_namespace() -> str:
    """The kubeconfig context's namespace, read at submit (never while rendering), as kubectl
    does for a manifest that names none."""
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except Exception as exc:  # no kubeconfig, bad context: say so plainly
        raise UserError(f"CLUSTER=k8s: cannot read a kubeconfig ({exc}); set KUBECONFIG, or "
                        "k8s.namespace in the spec") from None
    return active["context"].get("namespace") or "default"


def _server_error(exc: Exception) -> UserError:
    """The API server's own words (422 validation, 409 exists, 403 forbidden)."""
    body = getattr(exc, "body", None)
    try:
        msg = json.loads(body)["message"] if body else str(exc)
    except (ValueError, KeyError, TypeError):
        msg = str(body or exc)
    return UserError(f"Kubernetes refused it ({getattr(exc, 'status', '?')}): {msg}")


SUSPEND_SINCE = (1, 22)  # batch/v1 Job .spec.suspend beta, on by default (alpha, gated, in 1.21)
TTL_SINCE = (1, 21)  # .spec.ttlSecondsAfterFinished beta, on by default (alpha, gated, before)
PARALLELISM_ANNOTATION = "alpaca-jobs/parallelism"  # what a parallelism-0 pause restores


def server_version() -> tuple[int, int]:
    """(major, minor) of the API server; minors like "20+" (managed clusters) count as 20."""
    info = _api().VersionApi().get_code()
    return int(info.major), int(re.match(r"\d+", info.minor).group())


def fit_to_server(obj: dict[str, Any], version: tuple[int, int]) -> dict[str, Any]:
    """Drop Job fields the server would ignore or misread (pure; the rendered YAML keeps them)."""
    if obj["kind"] == "Job" and version < TTL_SINCE:
        obj["spec"].pop("ttlSecondsAfterFinished", None)
    return obj


def _paused(job: Any) -> bool:
    return bool(job.spec.suspend) or job.spec.parallelism == 0


def _finished(job: Any) -> State | None:
    for cond in job.status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return State.COMPLETED if cond.type == "Complete" else State.FAILED
    return None


@dataclass(frozen=True)
class K8sSubmission(Submission):
    """The objects to create, in order (ConfigMap, Job(s) or Deployment, Service); a
    multi-node run also carries its one-Job-per-node rendering for servers before 1.22."""

    namespace: str | None  # None: the kubeconfig context's, read at submit
    objects: list[dict[str, Any]]
    per_node: list[dict[str, Any]] | None = None
    nodes: int = 1
    ranks: int = 1


class K8sBackend(Backend):
    name = "k8s"

    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> K8sSubmission:
        self._no_dependencies(after)
        spec = loaded.spec
        run_dir = str(Path(spec.runs_dir) / run_id)
        # Pure: the namespace is the spec's, or none in the objects (submit then uses the
        # kubeconfig context's, as kubectl apply would), never read from the kubeconfig here.
        ns = spec.k8s.namespace
        loaded = objs.pin(loaded)
        multi = k8s_nodes.multi_node(spec)
        run = {"backend": self.name, "run_id": run_id, "run_dir": Path(run_dir), "namespace": ns,
               "nodes": spec.resources.nodes if multi else 1,
               "ranks": spec.resources.world_size if kinds.get(spec.job).per_gpu else 1}
        if multi:
            k8s_nodes.shared_claim(loaded)
            # Both renderings: submit picks one by the server's version (Indexed Jobs: 1.22+).
            indexed, per_node = (k8s_nodes.workload(loaded, run_id, run_dir, spec.image, p) for p in (False, True))
            for o in [*indexed, *per_node]:
                o.metadata.namespace = ns
            head = (f"# {spec.resources.nodes} nodes: an Indexed Job and a headless Service (servers "
                    f"1.22+); older servers get one Job per node, {run_id}-0..{spec.resources.nodes - 1}\n")
            return K8sSubmission(**run, text=head + objs.to_yaml(indexed), objects=objs.to_dicts(indexed),
                                 per_node=objs.to_dicts(per_node))
        cm = objs.config_map(loaded, run_id, run_dir)
        work = objs.workload(loaded, run_id, loaded.spec.image)
        for o in [cm, *work]:
            o.metadata.namespace = ns
        return K8sSubmission(**run, text=objs.to_yaml([cm, *work]), objects=objs.to_dicts([cm, *work]))

    def preflight(self, loaded: LoadedSpec) -> None:
        """The inputs, then (more than one node) that the runs claim is ReadWriteMany."""
        super().preflight(loaded)
        if not k8s_nodes.multi_node(loaded.spec):
            return
        claim = k8s_nodes.shared_claim(loaded)
        ns = loaded.spec.k8s.namespace or context_namespace()
        from kubernetes.client.rest import ApiException

        try:
            pvc = _api().CoreV1Api().read_namespaced_persistent_volume_claim(claim, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise _server_error(exc) from None
            pvc = None
        k8s_nodes.check_shared(loaded, claim, ns, pvc)

    def render_plain(self, loaded: LoadedSpec, spec_arg: str) -> str:
        if k8s_nodes.multi_node(loaded.spec):
            k8s_nodes.shared_claim(loaded)
            return k8s_nodes.manifests(loaded, spec_arg)
        return objs.manifests(loaded, spec_arg)

    def submit(self, sub: K8sSubmission) -> JobHandle:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns = sub.namespace or context_namespace()
        version = server_version()
        objects = sub.per_node if sub.per_node and version < k8s_nodes.INDEXED_SINCE else sub.objects
        owned = [o for o in objects if o["kind"] in ("ConfigMap", "Service")]
        owners = [fit_to_server(o, version) for o in objects if o not in owned]
        created = [self._create_owner(ns, o) for o in owners]
        # Owned by every Job (Deployment) of the run: deleting the last one deletes them too.
        refs = [{"apiVersion": o["apiVersion"], "kind": o["kind"], "name": c.metadata.name, "uid": c.metadata.uid,
                 "blockOwnerDeletion": True} for o, c in zip(owners, created, strict=True)]
        core = client.CoreV1Api()
        try:
            for obj in owned:
                obj["metadata"]["ownerReferences"] = refs
                create = core.create_namespaced_config_map if obj["kind"] == "ConfigMap" else core.create_namespaced_service
                try:
                    create(ns, obj)
                except ApiException as exc:
                    if exc.status != 409:  # a resumed run's ConfigMap (new payload) and Service exist
                        raise
                    if obj["kind"] == "ConfigMap":
                        core.replace_namespaced_config_map(obj["metadata"]["name"], ns, obj)
        except ApiException as exc:
            for o, c in zip(owners, created, strict=True):
                self._delete(ns, o["kind"], c.metadata.name, "Background")
            raise _server_error(exc) from None
        nodes = sub.nodes
        name = sub.run_id if nodes > 1 else created[0].metadata.name
        kind_part = "deployment/" if owners[0]["kind"] == "Deployment" else ""
        handle = JobHandle(sub.run_id, self.name, f"{ns}/{kind_part}{name}", str(sub.run_dir), [],
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           ranks=sub.ranks, nodes=nodes)
        self._save_handle(handle)
        return handle

    def _create_owner(self, ns: str, obj: dict[str, Any]) -> Any:
        client = _api()
        from kubernetes.client.rest import ApiException

        batch, apps = client.BatchV1Api(), client.AppsV1Api()
        try:
            if obj["kind"] == "Job":
                return batch.create_namespaced_job(ns, obj)
            return apps.create_namespaced_deployment(ns, obj)
        except ApiException as exc:
            if exc.status != 409:
                raise _server_error(exc) from None
            return self._resume(ns, obj)

    @staticmethod
    def _resume(ns: str, owner_obj: dict[str, Any]) -> Any:
        """The run exists: un-suspend a cancelled Job (scale a Deployment back up)."""
        client = _api()
        from kubernetes.client.rest import ApiException

        name = owner_obj["metadata"]["name"]
        try:
            if owner_obj["kind"] == "Deployment":
                return client.AppsV1Api().patch_namespaced_deployment(
                    name, ns, {"spec": {"replicas": owner_obj["spec"]["replicas"]}})
            batch = client.BatchV1Api()
            job = batch.read_namespaced_job(name, ns)
            done = _finished(job)
            if done:
                raise UserError(f"run {name} already finished ({done}) in namespace {ns}; submit it under "
                                f"a new --run-id, or delete it first: kubectl -n {ns} delete job {name}")
            if not _paused(job):
                raise UserError(f"run {name} is already running in namespace {ns}; use a new --run-id")
            restore = int((job.metadata.annotations or {}).get(PARALLELISM_ANNOTATION, "1"))
            body = ({"spec": {"suspend": False}} if job.spec.suspend
                    else {"spec": {"parallelism": restore}})
            return batch.patch_namespaced_job(name, ns, body)
        except ApiException as exc:
            raise _server_error(exc) from None

    @staticmethod
    def _save_handle(handle: JobHandle) -> None:
        """Where the run dir is not visible from here (a PVC), keep the handle locally."""
        try:
            Path(handle.run_dir).mkdir(parents=True, exist_ok=True)
            handle.save()
        except OSError:
            local = Path("runs") / handle.run_id
            local.mkdir(parents=True, exist_ok=True)
            handle.run_dir = str(local.absolute())
            handle.save()

    @staticmethod
    def _parse(handle: JobHandle) -> tuple[str, str, str]:
        """(namespace, kind, name) from "ns/name" (a Job) or "ns/deployment/name"."""
        parts = handle.job_id.split("/")
        return (parts[0], "Job", parts[1]) if len(parts) == 2 else (parts[0], "Deployment", parts[2])

    def _read(self, handle: JobHandle) -> Any:
        """The run's Deployment, or None where it is gone."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, _, name = self._parse(handle)
        try:
            return client.AppsV1Api().read_namespaced_deployment(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _server_error(exc) from None

    def _jobs(self, handle: JobHandle) -> list[Any]:
        """The run's Jobs: its one Job, or (more than one node) every Job labelled with it."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, _, name = self._parse(handle)
        batch = client.BatchV1Api()
        try:
            if handle.nodes > 1:
                jobs = batch.list_namespaced_job(ns, label_selector=f"alpaca-jobs/run-id={name}").items
                return sorted(jobs, key=lambda j: j.metadata.name)
            return [batch.read_namespaced_job(name, ns)]
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise _server_error(exc) from None

    def status(self, handle: JobHandle) -> State:
        """One state for the run, however many Jobs it has: FAILED once any has failed for
        good (and then the rest are stopped: never half a job), COMPLETED once all have."""
        if self._parse(handle)[1] == "Deployment":
            dep = self._read(handle)
            if dep is None:
                return State.DELETED
            if dep.metadata.deletion_timestamp or dep.spec.replicas == 0:
                return State.CANCELLED
            return State.RUNNING if (dep.status.available_replicas or 0) > 0 else State.PENDING
        jobs = self._jobs(handle)
        if not jobs:
            return State.DELETED
        done = [_finished(j) for j in jobs]
        live = [j for j, d in zip(jobs, done, strict=True) if d is None]
        if State.FAILED in done:
            self._stop(handle, [j for j in live if not _paused(j) and not j.metadata.deletion_timestamp])
            return State.FAILED
        if not live:
            return State.COMPLETED
        if any(j.metadata.deletion_timestamp or _paused(j) for j in live):
            return State.CANCELLED
        return State.RUNNING if any((j.status.active or 0) > 0 for j in live) else State.PENDING

    def _stop(self, handle: JobHandle, jobs: list[Any]) -> None:
        """Suspend the Jobs still running beside one that failed for good."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns = self._parse(handle)[0]
        for job in jobs:
            try:
                self._suspend(client.BatchV1Api(), ns, job.metadata.name, job)
            except ApiException as exc:
                if exc.status != 404:
                    raise _server_error(exc) from None

    def _pods(self, handle: JobHandle, node: int | None) -> list[Any]:
        """The run's pods (of node ``node``), newest first; of pods created in the same second,
        those that ran before those that did not (a pod that failed to start has no log)."""
        client = _api()
        ns, _, name = self._parse(handle)
        pods = client.CoreV1Api().list_namespaced_pod(ns, label_selector=f"alpaca-jobs/run-id={name}").items
        ran = {"Running": 2, "Succeeded": 2, "Failed": 1}
        pods = [p for p in pods if node is None or k8s_nodes.node_of(p) == node]
        return sorted(pods, key=lambda p: (p.metadata.creation_timestamp, ran.get(p.status.phase, 0)), reverse=True)

    def logs(self, handle: JobHandle, rank: int | None = 0) -> str:
        """The log of the newest pod of the node that runs ``rank`` (a pod's log holds all its
        node's ranks) through the API server; once the pods are gone (a cancelled run), the
        newest copy `cancel` kept under ``<run dir>/logs/``. ``rank`` None: every node's."""
        if rank is None and handle.nodes > 1:
            return "".join(f"=== node {i} ===\n{self._node_log(handle, i)}" for i in range(handle.nodes))
        return self._node_log(handle, (rank or 0) // max(1, handle.ranks // handle.nodes))

    def _node_log(self, handle: JobHandle, node: int) -> str:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, _, name = self._parse(handle)
        core = client.CoreV1Api()
        for pod in self._pods(handle, node):
            try:
                text = core.read_namespaced_pod_log(pod.metadata.name, ns)
            except ApiException as exc:
                if exc.status not in (400, 404):  # 400: not started yet; 404: just deleted
                    raise _server_error(exc) from None
                continue
            if text:
                return text
        prefix = f"{name}-{node}-" if handle.nodes > 1 else ""
        kept = sorted((p for p in _kept_logs_dir(handle).glob("*.log") if p.name.startswith(prefix)),
                      key=lambda p: p.stat().st_mtime)
        return kept[-1].read_text(errors="replace") if kept else ""

    def follow(self, handle: JobHandle):
        """Rank 0's pod log as it is written: the client's streaming ``follow=True`` read
        (no re-reading of the whole log). Waits for the pod to start; None once the run ended."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns = self._parse(handle)[0]
        core = client.CoreV1Api()
        while self.status(handle).active:
            pods = [p for p in self._pods(handle, 0) if p.status.phase in ("Running", "Succeeded", "Failed")]
            if pods:
                try:
                    resp = core.read_namespaced_pod_log(pods[0].metadata.name, ns, follow=True,
                                                        _preload_content=False)
                except ApiException as exc:
                    if exc.status not in (400, 404):
                        raise _server_error(exc) from None
                else:
                    return (chunk.decode(errors="replace") for chunk in resp.stream())
            time.sleep(1.0)
        return None

    def cancel(self, handle: JobHandle) -> str:
        """Suspend (every Job of the run) or scale to 0 (a Deployment); the objects, their
        status and the pods' logs stay. Returns what it did, for the CLI to print."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, kind, name = self._parse(handle)
        where = f"{kind.lower()} {ns}/{name}" + (f" ({handle.nodes} nodes)" if handle.nodes > 1 else "")
        objs_ = [self._read(handle)] if kind == "Deployment" else self._jobs(handle)
        if not objs_ or objs_[0] is None:
            return f"{handle.run_id}: gone ({where} no longer exists); nothing to cancel"
        try:
            if kind == "Deployment":
                client.AppsV1Api().patch_namespaced_deployment(name, ns, {"spec": {"replicas": 0}})
                what = "scaled to 0 replicas; Deployment, Service and logs kept"
            else:
                live = [j for j in objs_ if _finished(j) is None]
                if not live:
                    return f"{handle.run_id}: already finished ({self.status(handle)}); {where} left as it is"
                what = [self._suspend(client.BatchV1Api(), ns, j.metadata.name, j) for j in live][0]
        except ApiException as exc:
            raise _server_error(exc) from None
        kept = keep_logs(client.CoreV1Api(), ns, name, _kept_logs_dir(handle), wait_s=self._grace(objs_[0]) + 15)
        return f"{handle.run_id}: {what} ({where}; {kept} pod log(s) in {_kept_logs_dir(handle)}); " \
               f"resume: alpaca-jobs submit <spec> --run-id {handle.run_id}"

    @staticmethod
    def _suspend(batch: Any, ns: str, name: str, job: Any) -> str:
        if server_version() >= SUSPEND_SINCE:
            batch.patch_namespaced_job(name, ns, {"spec": {"suspend": True}})
            return "suspended; status and logs kept"
        # Older servers: parallelism 0 stops the pods and keeps the Job; remember what to restore.
        body = {"metadata": {"annotations": {PARALLELISM_ANNOTATION: str(job.spec.parallelism or 1)}},
                "spec": {"parallelism": 0}}
        batch.patch_namespaced_job(name, ns, body)
        return "suspended (parallelism 0: this server predates Job suspend); status and logs kept"

    @staticmethod
    def _grace(obj: Any) -> int:
        return obj.spec.template.spec.termination_grace_period_seconds or 30

    @staticmethod
    def _delete(ns: str, kind: str, name: str, propagation: str) -> None:
        client = _api()
        from kubernetes.client.rest import ApiException

        try:
            if kind == "Job":
                client.BatchV1Api().delete_namespaced_job(name, ns, propagation_policy=propagation)
            else:
                client.AppsV1Api().delete_namespaced_deployment(name, ns, propagation_policy=propagation)
        except ApiException as exc:
            if exc.status != 404:
                raise _server_error(exc) from None


def _kept_logs_dir(handle: JobHandle) -> Path:
    return Path(handle.run_dir) / "logs"


def keep_logs(core: Any, ns: str, run_id: str, out: Path, wait_s: float) -> int:
    """Copy every pod's log of the run into ``out`` until its running pods have stopped (the
    copy taken last holds the workers' shutdown lines), or ``wait_s`` passed. Returns how
    many pods' logs were kept."""
    from kubernetes.client.rest import ApiException

    out.mkdir(parents=True, exist_ok=True)
    end, kept = time.monotonic() + wait_s, set()
    while True:
        pods = core.list_namespaced_pod(ns, label_selector=f"alpaca-jobs/run-id={run_id}").items
        for pod in pods:
            try:
                text = core.read_namespaced_pod_log(pod.metadata.name, ns)
            except ApiException:  # not started, or gone between list and read
                continue
            if text:
                (out / f"{pod.metadata.name}.log").write_text(text)
                kept.add(pod.metadata.name)
        if not [p for p in pods if p.status.phase in ("Pending", "Running")] or time.monotonic() > end:
            return len(kept)
        time.sleep(1)
