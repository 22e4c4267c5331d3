"""Backends turn a validated job spec into a running job: render (pure), then submit.

Looked up by name and imported on use, so a Slurm user never imports kubernetes and the CLI
never imports torch.
"""

from __future__ import annotations

import importlib

from alpaca_jobs.backends.base import Backend
from alpaca_jobs.common.errors import UserError

BACKENDS = {
    "local": "alpaca_jobs.backends.local:LocalBackend",
    "slurm": "alpaca_jobs.backends.slurm:SlurmBackend",
    "k8s": "alpaca_jobs.backends.k8s:K8sBackend",
}
# The spec section each backend reads, named after it: its model as "module:Class", in a light
# module (pydantic only), so specs validate without importing kubernetes or submitit.
SECTIONS = {
    "slurm": "alpaca_jobs.backends.slurm_config:SlurmConfig",
    "k8s": "alpaca_jobs.backends.k8s_config:K8sConfig",
}
PLANNED: dict[str, str] = {}
CLUSTERS = tuple(BACKENDS) + tuple(PLANNED)


def get_backend(name: str) -> Backend:
    if name in PLANNED:
        raise UserError(
            f"CLUSTER={name}: this backend is not built yet ({PLANNED[name]}); "
            f"available now: {', '.join(BACKENDS)}"
        )
    if name not in BACKENDS:
        raise UserError(f"unknown cluster {name!r}; choose one of {', '.join(CLUSTERS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
