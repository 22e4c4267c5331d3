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
suspended run un-suspends it (of a deleted one, creates it again).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.backends import k8s_objects as objs
from alpaca_jobs.backends.base import ACTIVE_STATES, Backend, JobHandle, Submission
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


def _finished(job: Any) -> str | None:
    for cond in job.status.conditions or []:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return "COMPLETED" if cond.type == "Complete" else "FAILED"
    return None


class K8sBackend(Backend):
    name = "k8s"

    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> Submission:
        self._no_dependencies(after)
        spec = loaded.spec
        if spec.resources.nodes != 1:
            raise UserError(f"{loaded.path}: resources.nodes is {spec.resources.nodes}; the Kubernetes "
                            "backend runs one node per job today (use CLUSTER=slurm for multi-node)")
        run_dir = str(Path(spec.runs_dir) / run_id)
        # Pure: the namespace is the spec's, or none in the objects (submit then uses the
        # kubeconfig context's, as kubectl apply would), never read from the kubeconfig here.
        ns = spec.k8s.namespace
        loaded = objs.pin(loaded)
        cm = objs.config_map(loaded, run_id, run_dir)
        work = objs.workload(loaded, run_id, loaded.spec.image)
        for o in [cm, *work]:
            o.metadata.namespace = ns
        text = objs.to_yaml([cm, *work])
        return Submission(self.name, run_id, Path(run_dir), {"namespace": ns, "run_dir": run_dir},
                          {"objects": objs.to_dicts([cm, *work])}, text)

    def render_plain(self, loaded: LoadedSpec, spec_arg: str) -> str:
        return objs.manifests(loaded, spec_arg)

    def submit(self, sub: Submission) -> JobHandle:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns = sub.payload["namespace"] or context_namespace()
        cm, owner_obj, *rest = sub.params["objects"]
        core, batch, apps = client.CoreV1Api(), client.BatchV1Api(), client.AppsV1Api()
        is_job = owner_obj["kind"] == "Job"
        fit_to_server(owner_obj, server_version())
        try:
            created = (batch.create_namespaced_job if is_job else apps.create_namespaced_deployment)(ns, owner_obj)
        except ApiException as exc:
            if exc.status != 409:
                raise _server_error(exc) from None
            created = self._resume(ns, owner_obj)
        owner = {"apiVersion": owner_obj["apiVersion"], "kind": owner_obj["kind"], "name": created.metadata.name,
                 "uid": created.metadata.uid, "blockOwnerDeletion": True}
        try:
            for obj in [cm, *rest]:  # owned: deleting the Job/Deployment deletes them too
                obj["metadata"]["ownerReferences"] = [owner]
                create = core.create_namespaced_config_map if obj["kind"] == "ConfigMap" else core.create_namespaced_service
                try:
                    create(ns, obj)
                except ApiException as exc:
                    if exc.status != 409:  # a resumed run's ConfigMap (new payload) and Service exist
                        raise
                    if obj["kind"] == "ConfigMap":
                        core.replace_namespaced_config_map(obj["metadata"]["name"], ns, obj)
        except ApiException as exc:
            self._delete(ns, owner_obj["kind"], created.metadata.name, "Background")
            raise _server_error(exc) from None
        kind_part = "" if is_job else "deployment/"
        handle = JobHandle(sub.run_id, self.name, f"{ns}/{kind_part}{created.metadata.name}", str(sub.run_dir), [],
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._save_handle(handle)
        return handle

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
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, kind, name = self._parse(handle)
        try:
            if kind == "Job":
                return client.BatchV1Api().read_namespaced_job(name, ns)
            return client.AppsV1Api().read_namespaced_deployment(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _server_error(exc) from None

    def status(self, handle: JobHandle) -> str:
        job = self._read(handle)
        if job is None:
            return "DELETED"
        if self._parse(handle)[1] == "Deployment":
            if job.metadata.deletion_timestamp or job.spec.replicas == 0:
                return "CANCELLED"
            return "RUNNING" if (job.status.available_replicas or 0) > 0 else "PENDING"
        done = _finished(job)
        if done:
            return done
        if job.metadata.deletion_timestamp or _paused(job):
            return "CANCELLED"
        return "RUNNING" if (job.status.active or 0) > 0 else "PENDING"

    def logs(self, handle: JobHandle, rank: int = 0) -> str:
        """The newest pod's log through the API server; once the pods are gone (a cancelled
        run), the newest copy `cancel` kept under ``<run dir>/logs/``."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, _, name = self._parse(handle)
        core = client.CoreV1Api()
        pods = core.list_namespaced_pod(ns, label_selector=f"alpaca-jobs/run-id={name}").items
        # Newest first; of pods created in the same second, those that ran before those that did
        # not (a pod that failed to start has no log). The first with a log is the answer.
        ran = {"Running": 2, "Succeeded": 2, "Failed": 1}
        for pod in sorted(pods, key=lambda p: (p.metadata.creation_timestamp, ran.get(p.status.phase, 0)),
                          reverse=True):
            try:
                text = core.read_namespaced_pod_log(pod.metadata.name, ns)
            except ApiException as exc:
                if exc.status not in (400, 404):  # 400: not started yet; 404: just deleted
                    raise _server_error(exc) from None
                continue
            if text:
                return text
        kept = sorted(_kept_logs_dir(handle).glob("*.log"), key=lambda p: p.stat().st_mtime)
        return kept[-1].read_text(errors="replace") if kept else ""

    def follow(self, handle: JobHandle):
        """The running pod's log as it is written: the client's streaming ``follow=True`` read
        (no re-reading of the whole log). Waits for the pod to start; None once the run ended."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, _, name = self._parse(handle)
        core = client.CoreV1Api()
        while self.status(handle) in ACTIVE_STATES:
            pods = [p for p in core.list_namespaced_pod(ns, label_selector=f"alpaca-jobs/run-id={name}").items
                    if p.status.phase in ("Running", "Succeeded", "Failed")]
            if pods:
                pod = max(pods, key=lambda p: p.metadata.creation_timestamp)
                try:
                    resp = core.read_namespaced_pod_log(pod.metadata.name, ns, follow=True,
                                                        _preload_content=False)
                except ApiException as exc:
                    if exc.status not in (400, 404):
                        raise _server_error(exc) from None
                else:
                    return (chunk.decode(errors="replace") for chunk in resp.stream())
            time.sleep(1.0)
        return None

    def cancel(self, handle: JobHandle) -> str:
        """Suspend (a Job) or scale to 0 (a Deployment); the object, its status and the pods'
        logs stay. Returns what it did, for the CLI to print."""
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, kind, name = self._parse(handle)
        obj = self._read(handle)
        where = f"{kind.lower()} {ns}/{name}"
        if obj is None:
            return f"{handle.run_id}: gone ({where} no longer exists); nothing to cancel"
        try:
            if kind == "Deployment":
                client.AppsV1Api().patch_namespaced_deployment(name, ns, {"spec": {"replicas": 0}})
                what = "scaled to 0 replicas; Deployment, Service and logs kept"
            else:
                done = _finished(obj)
                if done:
                    return f"{handle.run_id}: already finished ({done}); {where} left as it is"
                what = self._suspend(client.BatchV1Api(), ns, name, obj)
        except ApiException as exc:
            raise _server_error(exc) from None
        kept = keep_logs(client.CoreV1Api(), ns, name, _kept_logs_dir(handle), wait_s=self._grace(obj) + 15)
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
