"""A stand-in for a kubelet and its container runtime, for tests against a real API server.

What is real: the API server, etcd, the Job controller, the scheduler, the garbage
collector; Job and pod objects, their status transitions, log streaming through the API
server's kubelet proxy, deletion with grace periods.

What this stands in for (no container runtime or images can run here): a pod's container
runs as a *host process* under this script's Python (the image's ``python``), in
``--workdir`` (the image's working directory). Volumes are host paths: a configMap is
written into its mount path, a PVC's mount path is a host directory, /dev/shm is the
host's. runAsUser and resource limits are recorded by the API server but not enforced.
Each pod's stdout+stderr go to a file that ``kubectl logs`` reads through the API server.
A pod with a ``subdomain`` (a pod of a multi-node run) gets namespaces, an address and a DNS
name of its own (pod_network.py); other pods share the host's network. Like a kubelet, it
waits for a pod's ConfigMaps to exist, expands ``$(VAR)`` in the command from the container's
environment, and fills ``fieldRef`` variables from the pod.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client, config, watch
from pod_network import PodNetwork

NODE = "fake-node-0"
PORT = 10250
LABELS = {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
          "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "2", "ephemeral-storage": "100Gi"}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    def __init__(self, state: Path, workdir: Path) -> None:
        self.v1 = client.CoreV1Api()
        self.state, self.workdir = state, workdir
        (state / "logs").mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.net = PodNetwork(state)

    # -- node -------------------------------------------------------------------------------
    def node_status(self) -> dict:
        return {"capacity": CAPACITY, "allocatable": CAPACITY,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": PORT}},
                "nodeInfo": {"kubeletVersion": "v1.20.2-fake", "architecture": "amd64", "operatingSystem": "linux",
                             "containerRuntimeVersion": "host-process://0", "kernelVersion": "", "osImage": "",
                             "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "fake kubelet", "lastHeartbeatTime": now(),
                                "lastTransitionTime": now()}]}

    def register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": LABELS}}
        try:
            self.v1.create_node(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        self.v1.patch_node_status(NODE, {"status": self.node_status()})

    def heartbeat(self) -> None:
        while True:
            time.sleep(10)
            try:
                self.v1.patch_node_status(NODE, {"status": self.node_status()})
            except Exception as exc:  # noqa: BLE001 - keep beating
                print("heartbeat failed:", exc, flush=True)

    # -- pods -------------------------------------------------------------------------------
    def log_path(self, ns: str, pod: str, container: str) -> Path:
        return self.state / "logs" / f"{ns}_{pod}_{container}.log"

    def _env(self, pod, c, ip: str) -> dict[str, str]:
        ns = pod.metadata.namespace
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "ALPACA_JOBS_CACHE")}
        for e in c.env or []:
            if e.value is not None:
                env[e.name] = e.value
            elif e.value_from and e.value_from.secret_key_ref:
                ref = e.value_from.secret_key_ref
                data = self.v1.read_namespaced_secret(ref.name, ns).data or {}
                env[e.name] = base64.b64decode(data[ref.key]).decode()
            elif e.value_from and e.value_from.field_ref:
                env[e.name] = _field(pod, e.value_from.field_ref.field_path, ip)
        return env

    def _config_map(self, name: str, ns: str, wait_s: float = 60) -> dict[str, str]:
        """A kubelet waits for a pod's ConfigMap to exist (the pod stays ContainerCreating)."""
        end = time.monotonic() + wait_s
        while True:
            try:
                return self.v1.read_namespaced_config_map(name, ns).data or {}
            except client.ApiException as exc:
                if exc.status != 404 or time.monotonic() > end:
                    raise
                time.sleep(0.5)

    def _volumes(self, pod) -> dict[str, dict[str, str]]:
        """configMap mount path -> its files; other volumes are host directories, made here."""
        by_name = {v.name: v for v in pod.spec.volumes or []}
        maps = {}
        for c in pod.spec.containers:
            for m in c.volume_mounts or []:
                vol = by_name[m.name]
                if m.mount_path == "/dev/shm":
                    continue
                if vol.config_map:
                    maps[m.mount_path] = self._config_map(vol.config_map.name, pod.metadata.namespace)
                else:
                    Path(m.mount_path).mkdir(parents=True, exist_ok=True)
        return maps

    def start(self, pod) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        key = f"{ns}/{name}"
        with self.lock:
            if key in self.procs:
                return
            self.procs[key] = None  # starting (a later event for it waits)
        c = pod.spec.containers[0]
        ip, holder = "127.0.0.1", None
        try:
            maps = self._volumes(pod)
            if pod.spec.subdomain:
                holder, ip = self.net.create(pod, maps)
            else:
                for path, files in maps.items():
                    Path(path).mkdir(parents=True, exist_ok=True)  # a fresh machine has no /etc/alpaca-jobs
                    for fname, text in files.items():
                        (Path(path) / fname).write_text(text)
            env = self._env(pod, c, ip)
        except Exception as exc:  # noqa: BLE001 - report it as the pod's failure
            self.net.remove(pod)
            self.finish(pod, 128, f"CreateContainerConfigError: {exc}")
            return
        argv = [_expand(a, env) for a in list(c.command or []) + list(c.args or [])]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        if holder is not None:
            argv = self.net.enter(holder, argv, self.workdir)
        out = open(self.log_path(ns, name, c.name), "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with self.lock:
            self.procs[key] = proc
        if holder is not None:
            self.net.publish(pod)
        self.v1.patch_namespaced_pod_status(name, ns, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": now(),
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now()}
                           for t in ("Initialized", "ContainersReady", "Ready", "PodScheduled")],
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": True,
                                   "restartCount": 0, "state": {"running": {"startedAt": now()}}}]}})
        threading.Thread(target=self.wait, args=(pod, proc), daemon=True).start()

    def wait(self, pod, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self.finish(pod, code if code >= 0 else 128 - code, "Completed" if code == 0 else "Error")

    def finish(self, pod, code: int, reason: str) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        c = pod.spec.containers[0]
        self.net.remove(pod)
        try:
            self.v1.patch_namespaced_pod_status(name, ns, {"status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}],
                "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": False,
                                       "restartCount": 0, "state": {"terminated": {
                                           "exitCode": code, "reason": reason, "finishedAt": now()}}}]}})
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def stop(self, pod) -> None:
        """Graceful deletion: SIGTERM, the grace period, SIGKILL, then remove the pod object."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        with self.lock:
            proc = self.procs.pop(key, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=pod.metadata.deletion_grace_period_seconds or 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.net.remove(pod)
        try:
            self.v1.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def run(self) -> None:
        while True:
            w = watch.Watch()
            try:
                for event in w.stream(self.v1.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={NODE}",
                                      timeout_seconds=300):
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        continue
                    if pod.metadata.deletion_timestamp:
                        threading.Thread(target=self.stop, args=(pod,), daemon=True).start()
                    elif pod.status.phase == "Pending":  # a thread: ConfigMaps may take a while
                        threading.Thread(target=self.start, args=(pod,), daemon=True).start()
            except Exception as exc:  # noqa: BLE001 - re-list and go on
                print("watch error:", exc, flush=True)
                time.sleep(1)


def _field(pod, path: str, ip: str) -> str:
    """A fieldRef's value: metadata.name/namespace/uid, metadata.labels['k'] or
    metadata.annotations['k'], status.podIP."""
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (getattr(pod.metadata, m.group(1)) or {}).get(m.group(2), "")
    return {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid, "status.podIP": ip, "spec.nodeName": NODE}.get(path, "")


def _expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion in command and args: $$ escapes, unknown names stay."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), arg)


def serve_logs(kubelet: Kubelet, state: Path) -> None:
    """The kubelet's /containerLogs endpoint, which the API server proxies `kubectl logs` to."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) == 4 and parts[0] == "containerLogs":
                path = kubelet.log_path(parts[1], parts[2], parts[3])
                body = path.read_bytes() if path.exists() else b""
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    cert, key = state / "kubelet.crt", state / "kubelet.key"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
                        f"/CN={NODE}", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--workdir", default=str(Path(__file__).resolve().parents[2]))
    args = ap.parse_args()
    config.load_kube_config(args.kubeconfig)
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    kubelet = Kubelet(state, Path(args.workdir))
    kubelet.register()
    threading.Thread(target=kubelet.heartbeat, daemon=True).start()
    threading.Thread(target=serve_logs, args=(kubelet, state), daemon=True).start()
    print(f"fake kubelet {NODE} ready", flush=True)
    kubelet.run()


if __name__ == "__main__":
    main()
