"""Typed job specs: one YAML file per job in `jobs/`, validated before anything runs.

A spec holds *what* to run (the job's hyperparameters, in a section named after the kind),
*how much hardware* (``resources``) and *how the hardware is laid out* (``layout``: a separate
accelerate/FSDP file, so the 7B recipe and the 8-GPU layout are chosen independently).
Backends only ever see a spec.

The sections belong to their owners: each kind declares its section's model (``Kind.config``,
e.g. ``alpaca_jobs/train/config.py``) and each backend its own (``SECTIONS`` in
``alpaca_jobs/backends``); ``JobSpec`` is the fields every job has, and each kind's class adds
its section and the backends' to it. A plugin kind's section is validated like a built-in one.

Errors name the file and the field path, e.g.
``jobs/train.yaml: train.learning_rate: Input should be greater than 0 (got -1)``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from alpaca_jobs.common import kinds
from alpaca_jobs.common.config import Strict, format_validation, read_yaml, validate
from alpaca_jobs.common.errors import SpecError, UserError

MAX_GPUS_PER_NODE = 16  # no node sold today has more; a bigger number is a typo
IMAGE_ENV = "ALPACA_JOBS_IMAGE"  # "<repository>:<tag>": job X runs "<repository>/X:<tag>"
DEFAULT_IMAGE = "alpaca-jobs:latest"


def image_for(job: str, setting: str | None = None) -> str:
    """The one variable that names every image: ``registry.example/team/alpaca-jobs:v1``
    makes the train job's image ``registry.example/team/alpaca-jobs/train:v1``."""
    import os

    setting = setting or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    repo, sep, tag = setting.rpartition(":")
    if not sep or "/" in tag or not repo:
        repo, tag = setting, "latest"
    return f"{repo}/{job}:{tag}"


class Resources(Strict):
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0, le=MAX_GPUS_PER_NODE)
    gpu_type: str | None = Field(None, description="price-table and scheduler key, e.g. a100-80gb")
    processes_per_node: int | None = Field(
        None, ge=1, le=256, description="worker processes per node; defaults to gpus_per_node"
    )
    cpus_per_process: int = Field(1, ge=1)
    mem_gb: float = Field(8, gt=0)
    time_limit: str = Field("01:00:00", description="[D-]HH:MM:SS")

    @field_validator("time_limit")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_minutes(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Resources:
        if self.gpus_per_node and not self.gpu_type:
            raise ValueError("gpu_type is required when gpus_per_node > 0 (e.g. a100-80gb)")
        if self.gpus_per_node and self.processes_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"processes_per_node ({self.processes_per_node}) must equal gpus_per_node "
                f"({self.gpus_per_node}): one FSDP worker per GPU"
            )
        return self

    @property
    def procs_per_node(self) -> int:
        return self.processes_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def time_limit_minutes(self) -> int:
        return parse_duration_minutes(self.time_limit)


class FsdpConfig(Strict):
    fsdp_version: Literal[2] = 2
    fsdp_reshard_after_forward: bool = Field(True, description="true = full shard (ZeRO-3)")
    fsdp_auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP"] = "TRANSFORMER_BASED_WRAP"
    fsdp_transformer_layer_cls_to_wrap: str = Field(
        "auto", description="'auto' derives the decoder-layer class from the model"
    )
    fsdp_state_dict_type: Literal["SHARDED_STATE_DICT"] = "SHARDED_STATE_DICT"
    fsdp_activation_checkpointing: bool = False
    sharding: Literal["auto", "hybrid", "full"] = Field(
        "auto", description="hybrid (HSDP): shard within a node, replicate across nodes, on a "
        "(nodes, processes per node) mesh; full: shard across every rank; auto: hybrid on more "
        "than one node, else full (train/mesh.py)")


class Layout(Strict):
    """The hardware layout: an accelerate-style FSDP config, kept apart from hyperparameters."""

    distributed_type: Literal["FSDP"] = "FSDP"
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="bf16: bf16 parameters in compute, fp32 master weights and gradient reduction")
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile each decoder layer before sharding (auto: on GPUs)")
    attention: Literal["auto", "varlen", "flex", "per_sequence"] = Field(
        "auto", description="packed-row attention: varlen (flash, CUDA), flex (compiled), "
        "per_sequence (SDPA per example); auto picks the first available")
    fsdp_config: FsdpConfig = Field(default_factory=FsdpConfig)


class CostConfig(Strict):
    gpu_hour_usd: float | None = Field(None, ge=0, description="default: price table by gpu_type")
    cpu_core_hour_usd: float = Field(0.0, ge=0)
    target_usd: float | None = Field(None, gt=0)
    max_usd: float | None = Field(None, gt=0, description="refuse a launch estimated to cost more "
                                  "(compute: expected, else time limit x GPUs x price); --over-budget overrides")


class JobSpec(Strict):
    """What every job has. A kind's own section (named after it, e.g. ``train``) and each
    backend's (``slurm``, ``k8s``) come from their registries: ``JobSpec.model_validate``
    validates with the class of the spec's ``job`` (``model_for``), so ``spec.train`` exists
    on a train job and on no other."""

    job: str = Field(description="the job kind: generate, train, serve, evaluate, or a plugin's")
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    image: str | None = Field(None, description=f"default: from {IMAGE_ENV} (see image_for)")
    runs_dir: str = "runs"
    resources: Resources = Field(default_factory=Resources)
    layout: str = Field("layouts/fsdp2-cpu.yaml", description="layout file, relative to the spec file")
    cost: CostConfig = Field(default_factory=CostConfig)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> JobSpec:
        """On ``JobSpec`` itself: the spec's kind's class validates (the union keyed on ``job``)."""
        if cls is JobSpec:
            return model_for(obj).model_validate(obj, **kwargs)
        return super().model_validate(obj, **kwargs)

    @model_validator(mode="before")
    @classmethod
    def _other_kinds(cls, data: Any) -> Any:
        """A section of another kind is refused (null is dropped: older payloads carried one per kind)."""
        if not isinstance(data, dict):
            return data
        job = data.get("job")
        data = {k: v for k, v in data.items() if v is not None or k not in kinds.names()}
        for key in data:
            if key != job and key in kinds.names():
                raise ValueError(f"{key}: not allowed in {_a(job)} job")
        if job in data and job not in cls.model_fields:
            raise ValueError(f"{job}: {_a(job)} job takes no section of its own")
        if job in cls.model_fields and job not in data:
            raise ValueError(f"{job}: required for {_a(job)} job")
        return data

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if not kinds.get(self.job).per_gpu and self.resources.world_size != 1:
            raise ValueError(f"resources: {_a(self.job)} job runs one process (one GPU at most)")
        for section in self.sections():
            check = getattr(section, "check_spec", None)
            if check is not None:
                check(self)
        return self

    def sections(self) -> list[BaseModel]:
        """The kind's own section (if it has one), then the backends'."""
        return [getattr(self, name) for name in type(self).model_fields
                if name not in JobSpec.model_fields and isinstance(getattr(self, name), BaseModel)]

    def derived(self) -> dict[str, Any]:
        """Figures worked out from the spec (``alpaca-jobs spec check`` prints them)."""
        out: dict[str, Any] = {"processes": self.resources.world_size}
        for section in self.sections():
            out.update(section.derived(self) if hasattr(section, "derived") else {})
        return out


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


class _Job(BaseModel):
    """Only what picks the class: the ``job`` field, a known kind."""

    model_config = ConfigDict(extra="ignore")
    job: str

    @field_validator("job")
    @classmethod
    def _known(cls, job: str) -> str:
        if job not in kinds.names():
            raise ValueError(f"unknown job kind {job!r}; the kinds are {', '.join(kinds.names())}")
        return job


def model_for(data: Any) -> type[JobSpec]:
    """The JobSpec class of ``data``'s kind (a spec mapping, or a JobSpec); ValidationError on
    ``job`` when it names no kind."""
    if isinstance(data, JobSpec):
        return type(data)
    return _model(_Job.model_validate(data).job)


_MODELS: dict[tuple[str, str | None], type[JobSpec]] = {}


def _model(job: str) -> type[JobSpec]:
    kind = kinds.get(job)
    key = (job, kind.config)
    if key not in _MODELS:
        fields: dict[str, Any] = {"job": (Literal[job], Field(description=JobSpec.model_fields["job"].description))}
        if kind.config:
            fields[job] = (_config_model(kind.config, f"the {job} kind's config"), ...)
        for name, ref in backend_sections().items():
            model = _config_model(ref, f"the {name} backend's config")
            fields[name] = (model, Field(default_factory=model))
        _MODELS[key] = create_model(f"{job.title()}JobSpec", __base__=JobSpec, __module__=__name__, **fields)
    return _MODELS[key]


def backend_sections() -> dict[str, str]:
    """Backend name -> its section's model ("module:Class"), from the backend registry. Read at
    run time: the registry sits above this module in the layers (it imports the backends)."""
    return importlib.import_module("alpaca_jobs.backends").SECTIONS


def _config_model(ref: str, what: str) -> type[BaseModel]:
    model = kinds.resolve(ref)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise UserError(f"{what} {ref!r} is not a pydantic model (subclass alpaca_jobs.common.config.Section)")
    return model

@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, its layout, and where they came from."""

    spec: JobSpec
    layout: Layout
    path: Path
    layout_path: Path

    def payload(self) -> dict[str, Any]:
        """Plain, picklable data for workers. Specs never hold secrets."""
        return {
            "spec": self.spec.model_dump(mode="json"),
            "layout": self.layout.model_dump(mode="json"),
            "spec_path": str(self.path),
        }

    def derived(self) -> dict[str, Any]:
        """The spec's derived figures and those its sections work out with the layout."""
        return {**self.spec.derived(), **layout_figures(self.spec, self.layout, self.path)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> LoadedSpec:
        return cls(
            spec=JobSpec.model_validate(payload["spec"]),
            layout=Layout.model_validate(payload["layout"]),
            path=Path(payload["spec_path"]),
            layout_path=Path(payload["spec"]["layout"]),
        )


MAX_TIME_LIMIT_DAYS = 30
_DURATION = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)$")


def parse_duration_minutes(text: str) -> int:
    """Slurm-style ``[D-]HH:MM:SS`` to whole minutes (rounded up)."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"time_limit {text!r} is not a duration: use [D-]HH:MM:SS, e.g. 03:00:00")
    days, hours, mins, secs = (int(g or 0) for g in m.groups())
    total = ((days * 24 + hours) * 60 + mins) * 60 + secs
    if total <= 0:
        raise ValueError("time_limit must be longer than zero")
    if total > MAX_TIME_LIMIT_DAYS * 86400:
        raise ValueError(f"time_limit {text!r} is longer than {MAX_TIME_LIMIT_DAYS} days; a run "
                         "that long should checkpoint and be resubmitted (the same --run-id resumes)")
    return -(-total // 60)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to nested dict ``data`` in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"override {assignment!r}: use field.path=value, e.g. train.epochs=1")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"override {assignment!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = raw


def validate_spec(data: dict[str, Any], path: Path) -> JobSpec:
    """The spec's kind's JobSpec from ``data``, or a SpecError: one ``file: field: message``
    line per problem, unknown fields listing the valid ones of that kind's spec."""
    model: type[BaseModel] = JobSpec
    try:
        model = model_for(data)
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation(path, exc, model)) from None
    if spec.image is None:
        spec = spec.model_copy(update={"image": image_for(spec.job)})
    return spec


def load_spec(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> LoadedSpec:
    """Load, override and validate a job spec and its layout. Raises SpecError."""
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    spec = validate_spec(data, path)
    layout_path = Path(spec.layout)
    if not layout_path.is_absolute():
        layout_path = path.parent / layout_path
    layout: Layout = validate(Layout, read_yaml(layout_path), layout_path)
    if spec.resources.gpus_per_node == 0 and layout.mixed_precision != "no":
        raise SpecError(
            f"{path}: layout: {layout_path} asks for {layout.mixed_precision} but the job has no "
            "GPUs; bf16 on CPU is 5-8x slower than fp32. Use a CPU layout (mixed_precision: no)"
        )
    layout_figures(spec, layout, path)
    return LoadedSpec(spec=spec, layout=layout, path=path, layout_path=layout_path)


def layout_figures(spec: JobSpec, layout: Layout, path: Path) -> dict[str, Any]:
    """Each section's ``check_layout``: a SpecError naming the spec file when one refuses the
    layout (the model does not fit the GPUs, ...), else the figures they work out."""
    out: dict[str, Any] = {}
    for section in spec.sections():
        check = getattr(section, "check_layout", None)
        if check is None:
            continue
        try:
            out.update(check(spec, layout) or {})
        except ValueError as exc:
            raise SpecError(f"{path}: {exc}") from None
    return out


def builtin_spec(data: dict[str, Any], overrides: tuple[str, ...] | list[str] = (),
                 origin: str = "<built-in>") -> LoadedSpec:
    """A spec from data instead of a file (a command's defaults), with ``--set`` overrides and
    the default layout; errors name ``origin``."""
    import copy

    data = copy.deepcopy(data)
    for assignment in overrides:
        apply_override(data, assignment)
    spec = validate_spec(data, Path(origin))
    layout_figures(spec, Layout(), Path(origin))
    return LoadedSpec(spec=spec, layout=Layout(), path=Path(origin), layout_path=Path(origin))


# Transitional (issue 21): the section models moved to their owners; branches written before
# the move still import them from here. Resolved on use, by name, so this module keeps importing
# nothing above it. Import them from their new homes; this table goes once those branches land.
_MOVED = {
    "TrainConfig": "alpaca_jobs.train.config", "ServeConfig": "alpaca_jobs.serve.config",
    "GenerateConfig": "alpaca_jobs.generate.config", "EvaluateConfig": "alpaca_jobs.evaluate.config",
    "System": "alpaca_jobs.evaluate.config", "Endpoint": "alpaca_jobs.common.endpoint",
    "PromptFormat": "alpaca_jobs.common.template", "SlurmConfig": "alpaca_jobs.backends.slurm_config",
    "Container": "alpaca_jobs.backends.slurm_config", "K8sConfig": "alpaca_jobs.backends.k8s_config",
    "Claim": "alpaca_jobs.backends.k8s_config", "SecretEnv": "alpaca_jobs.backends.k8s_config",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
