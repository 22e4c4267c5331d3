"""How a run's processes start: one typed launch description, computed once, rendered by each
backend.

``plan_launch(loaded, ...)`` reads the spec's resources and the kind (per-GPU workers or one
process) and gives a ``Launch``: nodes, processes per node, how a node learns its rank, where
the processes meet (the rendezvous), and what happens when a worker dies or the time limit
comes. Backends render it (an sbatch script's srun line, Kubernetes Jobs and a headless
Service, submitit's local tasks); the job runtime reads only its two hooks, so it knows no
scheduler: ``env_hook`` turns the scheduler's own variables into torch.distributed's env://
ones before torch starts, ``restart.on_time_limit`` asks the scheduler to run the job again
after the time-limit checkpoint. Hooks are ``"module:function"`` strings, resolved in the
worker, so the payload stays plain data.

Adding a backend: choose a ``RankSource`` and hooks, call ``plan_launch``, render the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

DEFAULT_RDZV_PORT = 29500


class RankSource(str, Enum):
    """How each worker learns its node's rank (and so its global rank)."""

    SINGLE = "single"  # one node: torchrun --standalone, or submitit's local tasks
    SCHEDULER_TASKS = "scheduler-tasks"  # one scheduler task per process (srun): SLURM_PROCID etc.
    COMPLETION_INDEX = "completion-index"  # an Indexed Job: the pod's JOB_COMPLETION_INDEX
    JOB_PER_NODE = "job-per-node"  # one Job per node, its rank written into its own pod template


@dataclass(frozen=True)
class Rendezvous:
    """Where the processes meet: the first node's address and a port on it. ``host`` None:
    the first node as the backend names it (Slurm: the first host of the job's node list;
    Kubernetes: pod 0's stable hostname under the run's headless Service)."""

    host: str | None = None
    port: int = DEFAULT_RDZV_PORT


@dataclass(frozen=True)
class Restart:
    """What happens when a worker fails or the time limit comes.

    ``max_restarts``: times the whole set is started again after a failure (a node that
    died, a pod that failed); each start resumes from the last checkpoint. ``whole_set``: any
    worker failing stops all of them (never half a job running). ``on_time_limit``: a
    ``"module:function"`` rank 0 calls with ``(max_restarts)`` after writing the checkpoint on
    the time-limit warning; None where the scheduler restarts nothing by itself."""

    max_restarts: int = 0
    whole_set: bool = True
    on_time_limit: str | None = None


@dataclass(frozen=True)
class Launch:
    nodes: int = 1
    procs_per_node: int = 1
    per_gpu: bool = False  # torch.distributed workers, one per GPU (or per CPU process slot)
    rank_source: RankSource = RankSource.SINGLE
    rendezvous: Rendezvous | None = None  # None: one process, nothing to meet
    restart: Restart = field(default_factory=Restart)
    env_hook: str | None = None  # "module:function" run in each worker before torch is imported

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rank_source"] = self.rank_source.value
        return data

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Launch:
        if not data:
            return cls()
        rdzv = data.get("rendezvous")
        return cls(nodes=int(data["nodes"]), procs_per_node=int(data["procs_per_node"]),
                   per_gpu=bool(data["per_gpu"]), rank_source=RankSource(data["rank_source"]),
                   rendezvous=Rendezvous(**rdzv) if rdzv else None,
                   restart=Restart(**data.get("restart", {})), env_hook=data.get("env_hook"))


def plan_launch(loaded: Any, rank_source: RankSource, *, max_restarts: int = 0,
                on_time_limit: str | None = None, env_hook: str | None = None,
                port: int = DEFAULT_RDZV_PORT, host: str | None = None) -> Launch:
    """The launch of ``loaded`` (a LoadedSpec) as a backend starts it. Pure. ``host``: the
    rendezvous host where the backend names it at render time (a Kubernetes pod's hostname)."""
    from alpaca_jobs.common import kinds

    res = loaded.spec.resources
    per_gpu = kinds.get(loaded.spec.job).per_gpu
    nodes, ppn = (res.nodes, res.procs_per_node) if per_gpu else (1, 1)
    if nodes == 1 and rank_source is not RankSource.SCHEDULER_TASKS:
        rank_source = RankSource.SINGLE
    rendezvous = Rendezvous(host=host, port=port) if nodes * ppn > 1 else None
    return Launch(nodes=nodes, procs_per_node=ppn, per_gpu=per_gpu, rank_source=rank_source,
                  rendezvous=rendezvous,
                  restart=Restart(max_restarts=max_restarts, on_time_limit=on_time_limit),
                  env_hook=env_hook)
