"""One naming table: generic resource names -> each backend's own parameter names.

Backends never read ``spec.resources`` field by field; they ask ``translate`` for their
parameters. A new resource is one row here, not an edit in three backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alpaca_jobs.spec import JobSpec

# generic name -> {backend: its parameter name}; a backend missing from a row ignores it.
TABLE: dict[str, dict[str, str]] = {
    "job_name": {"slurm": "job_name"},
    "nodes": {"slurm": "nodes"},
    "processes_per_node": {"local": "tasks_per_node", "slurm": "ntasks_per_node"},
    "cpus_per_process": {"slurm": "cpus_per_task"},
    "memory": {"slurm": "mem"},
    "time_minutes": {"local": "timeout_min", "slurm": "time"},
    "gpus_per_node": {"local": "gpus_per_node", "slurm": "gpus_per_node"},
}

GENERIC: dict[str, Callable[[JobSpec], Any]] = {
    "job_name": lambda s: s.name,
    "nodes": lambda s: s.resources.nodes,
    "processes_per_node": lambda s: s.resources.procs_per_node,
    "cpus_per_process": lambda s: s.resources.cpus_per_process,
    "memory": lambda s: f"{max(1, round(s.resources.mem_gb))}G",
    "time_minutes": lambda s: s.resources.time_limit_minutes,
    "gpus_per_node": lambda s: s.resources.gpus_per_node,
}


def translate(backend: str, spec: JobSpec) -> dict[str, Any]:
    """This backend's parameters for the spec's resources."""
    return {names[backend]: GENERIC[key](spec) for key, names in TABLE.items() if backend in names}
