"""One naming table: generic resource names -> each backend's own parameter name and format.

Backends never read ``spec.resources`` field by field; they ask ``translate`` for their
parameters. A new resource is one row here; a unit is formatted by one function here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alpaca_jobs.spec import JobSpec


def whole_gib(gb: float) -> int:
    return max(1, round(gb))


def slurm_memory(gb: float) -> str:
    return f"{whole_gib(gb)}G"  # Slurm's G is 1024 MiB


def k8s_memory(gb: float) -> str:
    return f"{whole_gib(gb)}Gi"


def slurm_time(minutes: int) -> str:
    days, minutes = divmod(int(minutes), 24 * 60)
    return (f"{days}-" if days else "") + f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def seconds(minutes: int) -> int:
    return int(minutes) * 60


GENERIC: dict[str, Callable[[JobSpec], Any]] = {
    "job_name": lambda s: s.name,
    "nodes": lambda s: s.resources.nodes,
    "processes_per_node": lambda s: s.resources.procs_per_node,
    "cpus_per_process": lambda s: s.resources.cpus_per_process,
    "cpus_per_node": lambda s: s.resources.cpus_per_process * s.resources.procs_per_node,
    "memory_gb": lambda s: s.resources.mem_gb,
    "time_minutes": lambda s: s.resources.time_limit_minutes,
    "gpus_per_node": lambda s: s.resources.gpus_per_node,
}

# generic name -> {backend: (its parameter name, formatter)}; a backend missing from a row ignores it.
TABLE: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "job_name": {"slurm": ("job_name", str)},
    "nodes": {"slurm": ("nodes", int)},
    "processes_per_node": {"local": ("tasks_per_node", int), "slurm": ("ntasks_per_node", int)},
    "cpus_per_process": {"slurm": ("cpus_per_task", int)},
    "cpus_per_node": {"k8s": ("cpu", str)},
    "memory_gb": {"slurm": ("mem", slurm_memory), "k8s": ("memory", k8s_memory)},
    "time_minutes": {"local": ("timeout_min", int), "slurm": ("time", slurm_time),
                     "k8s": ("active_deadline_seconds", seconds)},
    "gpus_per_node": {"local": ("gpus_per_node", int), "slurm": ("gpus_per_node", int),
                      "k8s": ("nvidia.com/gpu", int)},
}


def translate(backend: str, spec: JobSpec) -> dict[str, Any]:
    """This backend's parameters for the spec's resources, each in the backend's own format."""
    out = {}
    for key, names in TABLE.items():
        if backend in names:
            name, fmt = names[backend]
            out[name] = fmt(GENERIC[key](spec))
    return out
