"""The slurm section of a job spec: site-specific Slurm names. Imports no submitit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alpaca_jobs.common.config import Section, Strict


class Container(Strict):
    """How a Slurm job runs its image: none (the nodes' own Python), pyxis (srun
    --container-image) or apptainer (python wrapped in ``apptainer exec``)."""

    runtime: Literal["none", "pyxis", "apptainer"] = "none"
    image: str | None = Field(None, description="pyxis: registry image or .sqsh; apptainer: .sif")
    mounts: list[str] = Field(default_factory=list, description="host:container paths")
    workdir: str | None = Field(None, description="pyxis: working directory inside the container")
    python: str = Field("python3", description="the interpreter inside the container")

    @model_validator(mode="after")
    def _check(self) -> Container:
        if self.runtime != "none" and not self.image:
            raise ValueError(f"image is required with runtime {self.runtime}")
        return self


class SlurmConfig(Section):
    """Site-specific Slurm names: configuration, never code."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gres_types: dict[str, str] = Field(
        default_factory=dict,
        description="gpu_type -> the site's gres type, e.g. {a100-80gb: a100}; "
        "unmapped types ask for --gpus-per-node",
    )
    exclusive: bool = Field(False, description="the whole node for this job (#SBATCH --exclusive)")
    python: str = Field("python3", description="the interpreter on the compute nodes (container runtime "
                        "none), with alpaca_jobs installed: a command on their PATH or a path; "
                        "checked on a node before submission")
    setup: list[str] = Field(default_factory=list, description="shell lines run before srun")
    extra_sbatch: dict[str, str | int | bool] = Field(default_factory=dict)
    max_requeues: int = Field(5, ge=0, description="times a job requeues itself: after its time-limit "
                              "checkpoint, or when a task died without an error of its own (a node lost)")
    textfile_dir: str | None = Field(None, description="node_exporter textfile collector directory: "
                                     "each run writes its metrics there")
    container: Container = Field(default_factory=Container)
