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
from alpaca_jobs.common.errors import UserError
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

    def render(self, loaded: LoadedSpec, run_id: str, after: list[str] | None = None) -> Submission:
        self._no_dependencies(after)
        spec = loaded.spec
        if spec.resources.nodes != 1:
            raise UserError(f"{loaded.path}: resources.nodes is {spec.resources.nodes}; the Kubernetes "
                            "backend runs one node per job today (use CLUSTER=slurm for multi-node)")
        run_dir = str(Path(spec.runs_dir) / run_id)
        ns = current_namespace(loaded)
        cm = objs.config_map(loaded, run_id, run_dir)
        work = objs.workload(loaded, run_id, spec.image)
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

        ns = sub.payload["namespace"]
        cm, owner_obj, *rest = sub.params["objects"]
        core, batch, apps = client.CoreV1Api(), client.BatchV1Api(), client.AppsV1Api()
        is_job = owner_obj["kind"] == "Job"
        try:
            created = (batch.create_namespaced_job if is_job else apps.create_namespaced_deployment)(ns, owner_obj)
        except ApiException as exc:
            raise _server_error(exc) from None
        owner = {"apiVersion": owner_obj["apiVersion"], "kind": owner_obj["kind"], "name": created.metadata.name,
                 "uid": created.metadata.uid, "blockOwnerDeletion": True}
        try:
            for obj in [cm, *rest]:  # owned: deleting the Job/Deployment deletes them too
                obj["metadata"]["ownerReferences"] = [owner]
                create = core.create_namespaced_config_map if obj["kind"] == "ConfigMap" else core.create_namespaced_service
                try:
                    create(ns, obj)
                except ApiException as exc:
                    if exc.status != 409 or obj["kind"] != "ConfigMap":  # a resumed run's ConfigMap may exist
                        raise
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
            if job.metadata.deletion_timestamp:
                return "CANCELLED"
            return "RUNNING" if (job.status.available_replicas or 0) > 0 else "PENDING"
        for cond in job.status.conditions or []:
            if cond.status == "True" and cond.type in ("Complete", "Failed"):
                return "COMPLETED" if cond.type == "Complete" else "FAILED"
        if job.metadata.deletion_timestamp:
            return "CANCELLED"
        return "RUNNING" if (job.status.active or 0) > 0 else "PENDING"

    def logs(self, handle: JobHandle, rank: int = 0) -> str:
        client = _api()
        from kubernetes.client.rest import ApiException

        ns, _, name = self._parse(handle)
        core = client.CoreV1Api()
        pods = core.list_namespaced_pod(ns, label_selector=f"alpaca-jobs/run-id={name}").items
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
        ns, kind, name = self._parse(handle)
        self._delete(ns, kind, name, "Foreground")

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
