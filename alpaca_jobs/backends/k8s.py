"""Kubernetes backend: the official client, the current kubeconfig context and namespace.

submit = create the run's ConfigMap and Job (the Job owns the ConfigMap, so deleting the
Job cleans both); status = the Job's conditions; logs = the newest pod's log; cancel =
delete the Job with foreground propagation (pods get SIGTERM: workers checkpoint first).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.backends import k8s_objects as objs
from alpaca_jobs.backends.base import Backend, JobHandle, Submission
from alpaca_jobs.errors import UserError
from alpaca_jobs.spec import LoadedSpec


def _api():
    from kubernetes import client, config

    try:
        config.load_kube_config()
    except Exception as exc:  # no kubeconfig, bad context: say so plainly
        raise UserError(f"CLUSTER=k8s: cannot load a kubeconfig ({exc}); set KUBECONFIG") from None
    return client


def current_namespace(loaded: LoadedSpec | None = None) -> str:
    if loaded and loaded.spec.k8s.namespace:
        return loaded.spec.k8s.namespace
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
        return active["context"].get("namespace") or "default"
    except Exception:  # noqa: BLE001 - no kubeconfig yet: the dry run still renders
        return "default"


def _server_error(exc: Exception) -> UserError:
    """The API server's own words (422 validation, 409 exists, 403 forbidden)."""
    body = getattr(exc, "body", None)
    try:
        msg = json.loads(body)["message"] if body else str(exc)
    except (ValueError, KeyError, TypeError):
        msg = str(body or exc)
    return UserError(f"Kubernetes refused it ({getattr(exc, 'status', '?')}): {msg}")


class K8sBackend(Backend):
    name = "k8s"

    def render(self, loaded: LoadedSpec, run_id: str) -> Submission:
        spec = loaded.spec
        if spec.resources.nodes != 1:
            raise UserError(f"{loaded.path}: resources.nodes is {spec.resources.nodes}; the Kubernetes "
                            "backend runs one node per job today (use CLUSTER=slurm for multi-node)")
        run_dir = str(Path(spec.runs_dir) / run_id)
        ns = current_namespace(loaded)
        cm = objs.config_map(loaded, run_id, run_dir)
        job = objs.job(loaded, run_id, spec.image)
        cm.metadata.namespace = job.metadata.namespace = ns
        text = objs.to_yaml([cm, job])
        return Submission(self.name, run_id, Path(run_dir), {"namespace": ns, "run_dir": run_dir},
                          {"objects": objs.to_dicts([cm, job])}, text)

    def submit(self, sub: Submission) -> JobHandle:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns = sub.payload["namespace"]
        cm, job = sub.params["objects"]
        core, batch = client.CoreV1Api(), client.BatchV1Api()
        try:
            created = batch.create_namespaced_job(ns, job)
        except ApiException as exc:
            raise _server_error(exc) from None
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": created.metadata.name,
                 "uid": created.metadata.uid, "blockOwnerDeletion": True}
        cm["metadata"]["ownerReferences"] = [owner]
        try:
            core.create_namespaced_config_map(ns, cm)
        except ApiException as exc:
            if exc.status != 409:  # a resumed run's ConfigMap may be there already
                batch.delete_namespaced_job(created.metadata.name, ns, propagation_policy="Background")
                raise _server_error(exc) from None
            core.replace_namespaced_config_map(cm["metadata"]["name"], ns, cm)
        handle = JobHandle(sub.run_id, self.name, f"{ns}/{created.metadata.name}", str(sub.run_dir), [],
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._save_handle(handle)
        return handle

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

    def _job(self, handle: JobHandle) -> Any:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, name = handle.job_id.split("/", 1)
        try:
            return client.BatchV1Api().read_namespaced_job(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _server_error(exc) from None

    def status(self, handle: JobHandle) -> str:
        job = self._job(handle)
        if job is None:
            return "DELETED"
        for cond in job.status.conditions or []:
            if cond.status == "True" and cond.type in ("Complete", "Failed"):
                return "COMPLETED" if cond.type == "Complete" else "FAILED"
        if job.metadata.deletion_timestamp:
            return "CANCELLED"
        return "RUNNING" if (job.status.active or 0) > 0 else "PENDING"

    def logs(self, handle: JobHandle, rank: int = 0) -> str:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, name = handle.job_id.split("/", 1)
        core = client.CoreV1Api()
        pods = core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items
        if not pods:
            return ""
        pod = max(pods, key=lambda p: p.metadata.creation_timestamp)
        try:
            return core.read_namespaced_pod_log(pod.metadata.name, ns)
        except ApiException as exc:
            if exc.status == 400:  # not started yet
                return ""
            raise _server_error(exc) from None

    def cancel(self, handle: JobHandle) -> None:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, name = handle.job_id.split("/", 1)
        try:
            client.BatchV1Api().delete_namespaced_job(name, ns, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise _server_error(exc) from None
