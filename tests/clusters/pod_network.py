"""Pod networks for the stand-in kubelet (fake_kubelet.py): a pod that names a ``subdomain``
(one pod of a multi-node run, under its headless Service) runs in network, hostname and mount
namespaces of its own, with its own address on a private bridge, so nothing passes between
pods through a shared loopback.

- The namespaces are held by one ``sleep infinity`` per pod (``unshare``), tracked by its pid
  file in ``<state>/holders``; the pod's processes enter them with ``nsenter``.
- Its veth end is eth0 there, with an address in 10.214.0.0/16 (the bridge aj-k8s0 is .0.1).
- Its hostname is the pod's ``spec.hostname``; /etc/hosts is a file per Kubernetes namespace,
  bind-mounted, listing the running pods as the cluster's DNS would name them
  (``<hostname>.<subdomain>.<ns>.svc.cluster.local``, ``<hostname>.<subdomain>``), rewritten in
  place as pods start and stop: a pod that stopped no longer resolves.
- Its configMap volumes are directories of its own, bind-mounted at their mount paths.

What this stands for: a CNI plugin and the cluster DNS. Pods without a subdomain (one-node
jobs, servers) share the host's network here.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from pathlib import Path

BRIDGE = "aj-k8s0"
NET = ipaddress.ip_network("10.214.0.0/16")
GATEWAY = "10.214.0.1"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _alive(pid_file: Path, comm: str) -> int | None:
    try:
        pid = int(pid_file.read_text())
        if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
            return pid
    except (OSError, ValueError):
        pass
    return None


class PodNetwork:
    def __init__(self, state: Path) -> None:
        self.holders = state / "holders"
        self.hosts = state / "hosts"
        self.pods_dir = state / "pods"
        for d in (self.holders, self.hosts, self.pods_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.pods: dict[str, dict] = {}  # key -> {pid, ip, ns, names}
        self.next = 2
        self._bridge()

    def _bridge(self) -> None:
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
            _run("ip", "addr", "add", f"{GATEWAY}/{NET.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")

    def _address(self) -> str:
        used = {p["ip"] for p in self.pods.values()}
        while True:
            ip = str(NET.network_address + self.next)
            self.next = self.next + 1 if self.next < NET.num_addresses - 2 else 2
            if ip not in used and ip != GATEWAY:
                return ip

    def create(self, pod, config_maps: dict[str, dict[str, str]]) -> tuple[int, str]:
        """Namespaces for ``pod`` (configMap mount path -> files); (holder pid, pod IP)."""
        ns, name = pod.metadata.namespace, pod.metadata.name
        key = f"{ns}_{name}"
        pid_file = self.holders / f"{key}.pid"
        holder = subprocess.Popen(["unshare", "--net", "--uts", "--mount", "--propagation", "private",
                                   "sleep", "infinity"], start_new_session=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file.write_text(str(holder.pid))
        mine = os.readlink("/proc/self/ns/net")
        for _ in range(100):  # unshare execs sleep once the namespaces exist
            try:
                if os.readlink(f"/proc/{holder.pid}/ns/net") != mine:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        with self.lock:
            ip = self._address()
            self.pods[key] = {"pid": holder.pid, "ip": ip, "ns": ns, "names": []}
        veth = f"ajk{holder.pid % 100000}"
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(holder.pid))
        _run("ip", "link", "set", veth, "master", BRIDGE)
        _run("ip", "link", "set", veth, "up")
        hosts = self._hosts_file(ns)
        mounts = []
        for i, (path, files) in enumerate(sorted(config_maps.items())):
            own = self.pods_dir / key / f"cm-{i}"
            own.mkdir(parents=True, exist_ok=True)
            for fname, text in files.items():
                (own / fname).write_text(text)
            Path(path).mkdir(parents=True, exist_ok=True)  # the mount point, in the copied tree
            mounts.append(f"mount --bind {own} {path}")
        hostname = pod.spec.hostname or name
        script = " && ".join([
            "ip link set lo up", f"ip addr add {ip}/{NET.prefixlen} dev eth0", "ip link set eth0 up",
            f"ip route add default via {GATEWAY}", f"hostname {hostname}", f"mount --bind {hosts} /etc/hosts",
            *mounts])
        _run("nsenter", "-t", str(holder.pid), "-n", "-u", "-m", "sh", "-c", script)
        return holder.pid, ip

    def enter(self, pid: int, argv: list[str], workdir: Path) -> list[str]:
        """``argv`` run inside the pod's namespaces (nsenter execs it: the pid is the program's)."""
        return ["nsenter", "-t", str(pid), "-n", "-u", "-m", f"--wd={workdir}", "--", *argv]

    def publish(self, pod) -> None:
        """The pod runs: its names resolve in its Kubernetes namespace."""
        key = f"{pod.metadata.namespace}_{pod.metadata.name}"
        with self.lock:
            entry = self.pods.get(key)
            if entry is None:
                return
            host, sub, ns = pod.spec.hostname or pod.metadata.name, pod.spec.subdomain, pod.metadata.namespace
            entry["names"] = [f"{host}.{sub}.{ns}.svc.cluster.local", f"{host}.{sub}.{ns}.svc",
                              f"{host}.{sub}", host]
            self._write_hosts(ns)

    def remove(self, pod) -> None:
        """The pod stopped: its names no longer resolve; its namespaces go."""
        ns = pod.metadata.namespace
        key = f"{ns}_{pod.metadata.name}"
        with self.lock:
            entry = self.pods.pop(key, None)
            if entry is not None:
                self._write_hosts(ns)
        pid_file = self.holders / f"{key}.pid"
        pid = _alive(pid_file, "sleep")
        if pid is not None:
            os.kill(pid, 9)  # its network namespace and veth go with it
        pid_file.unlink(missing_ok=True)

    def _hosts_file(self, ns: str) -> Path:
        path = self.hosts / ns
        if not path.exists():
            path.write_text("127.0.0.1 localhost\n")
        return path

    def _write_hosts(self, ns: str) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{p['ip']} {' '.join(p['names'])}" for p in self.pods.values()
                                           if p["ns"] == ns and p["names"]]
        # In place: the pods' bind mounts hold this inode.
        with open(self._hosts_file(ns), "r+") as fh:
            fh.seek(0)
            fh.write("\n".join(lines) + "\n")
            fh.truncate()


def teardown(state: Path) -> None:
    """Every holder this kubelet left (by pid file), then the bridge (`k8s.sh down`)."""
    for pid_file in (state / "holders").glob("*.pid"):
        pid = _alive(pid_file, "sleep")
        if pid is not None:
            os.kill(pid, 9)
        pid_file.unlink(missing_ok=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


if __name__ == "__main__":
    import sys

    teardown(Path(sys.argv[1]))
