"""The k8s section of a job spec: cluster-specific Kubernetes settings. Imports no kubernetes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alpaca_jobs.common.config import Section, Strict


class Claim(Strict):
    claim: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    mount: str = Field(pattern=r"^/")
    read_only: bool = False


class SecretEnv(Strict):
    secret: str
    key: str


class K8sConfig(Section):
    """Cluster-specific Kubernetes settings: configuration, never code."""

    namespace: str | None = Field(None, description="default: the kubeconfig context's")
    gpu_products: dict[str, str] = Field(
        default_factory=lambda: {"a100-80gb": "NVIDIA-A100-SXM4-80GB"},
        description="gpu_type -> GPU feature discovery's nvidia.com/gpu.product label value",
    )
    volumes: list[Claim] = Field(default_factory=list, description="PVCs: runs, data, models")
    shm_gb: float = Field(16, gt=0, description="memory-backed /dev/shm for the workers")
    backoff_limit: int = Field(3, ge=0)
    grace_seconds: int = Field(120, ge=1, description="SIGTERM to SIGKILL: time to checkpoint")
    ttl_seconds_after_finished: int | None = Field(
        7 * 24 * 3600, ge=0, description="a finished Job (and its pods' logs) is deleted this long after it "
        "ends (servers 1.21+); null keeps it until deleted by hand")
    run_as_user: int = Field(1000, ge=1)
    service_account: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    secret_env: dict[str, SecretEnv] = Field(default_factory=dict, description="ENV: {secret, key}")
    priority_class: str | None = None
    pushgateway: str | None = Field(None, description="Prometheus Pushgateway URL the jobs push to, "
                                    "e.g. http://pushgateway.monitoring:9091")
