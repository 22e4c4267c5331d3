"""Typed job specs: one YAML file per job in `jobs/`, validated before anything runs.

A spec holds *what* to run (the job's hyperparameters), *how much hardware* (``resources``)
and *how the hardware is laid out* (``layout``: a separate accelerate/FSDP file, so the 7B
recipe and the 8-GPU layout are chosen independently). Backends only ever see a spec.

Errors name the file and the field path, e.g.
``jobs/train.yaml: train.learning_rate: Input should be greater than 0 (got -1)``.
"""

from __future__ import annotations

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
    field_validator,
    model_validator,
)

from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import SpecError

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
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


class PromptFormat(_Strict):
    """The preamble sentences are ours; the ``### ...:`` section markers are the Alpaca format."""

    preamble_with_input: str = (
        "Here is a task, paired with more context. Write a reply that carries out the task."
    )
    preamble_no_input: str = "Here is a task. Write a reply that carries out the task."


class TrainConfig(_Strict):
    base_model: str = Field(description="HF model directory, or preset:tiny-llama / preset:smollm2-135m")
    data: str = Field(description="Alpaca JSON/JSONL, or self-instruct seed JSONL")
    max_length: int = Field(512, ge=16, le=131072)
    global_batch_size: int = Field(128, ge=1)
    micro_batch_size: int = Field(
        4, ge=1, description="examples per micro-batch of the padded recipe (the HF Trainer "
        "reference); our loop packs rows by tokens_per_micro_step instead")
    tokens_per_micro_step: int = Field(
        8192, ge=128, le=1_048_576, description="token budget of one packed row per process: a "
        "step's share is split into more micro-steps only when it exceeds this (8192 fits the 7B "
        "on 80 GB without activation checkpointing)")
    epochs: int = Field(3, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, description="stop early (smoke tests)")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    seed: int = 42
    checkpoint_interval_minutes: float = Field(
        30.0, gt=0, le=10_080, description="wall-clock time between checkpoints (also on a stop signal)")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also every N steps")
    keep_checkpoints: int = Field(2, ge=1)
    progress_every_seconds: float = Field(
        10.0, gt=0, le=86_400, description="rank 0 logs a progress line (step n/N, loss, tokens/s, "
        "ETA, cost so far) this often when its stdout is not a terminal; on one it draws a bar")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="experiment trackers rank 0 logs each step to "
        "(accelerate's: TensorBoard under <run dir>/tensorboard, W&B when installed)")
    prompt: PromptFormat = Field(default_factory=PromptFormat)
    model_shape: Literal["llama-7b", "llama-13b", "llama-65b"] | None = Field(
        None, description="the base model's shape for the memory check before launch when its "
        "config.json is not readable from the submitting machine (train/memory.py)")


class FsdpConfig(_Strict):
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


class Layout(_Strict):
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


class CostConfig(_Strict):
    gpu_hour_usd: float | None = Field(None, ge=0, description="default: price table by gpu_type")
    cpu_core_hour_usd: float = Field(0.0, ge=0)
    target_usd: float | None = Field(None, gt=0)
    max_usd: float | None = Field(None, gt=0, description="refuse a launch estimated to cost more "
                                  "(compute: expected, else time limit x GPUs x price); --over-budget overrides")


class Container(_Strict):
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


class SlurmConfig(_Strict):
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
    max_requeues: int = Field(5, ge=0, description="times a timed-out job requeues itself")
    textfile_dir: str | None = Field(None, description="node_exporter textfile collector directory: "
                                     "each run writes its metrics there")
    container: Container = Field(default_factory=Container)


class Claim(_Strict):
    claim: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    mount: str = Field(pattern=r"^/")
    read_only: bool = False


class SecretEnv(_Strict):
    secret: str
    key: str


class K8sConfig(_Strict):
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


class ServeConfig(_Strict):
    """The serve job. Secrets (API keys, the watermark key) come from the environment only:
    ALPACA_JOBS_API_KEYS, ALPACA_JOBS_WATERMARK_KEY (on Kubernetes via k8s.secret_env)."""

    model: str | None = Field(None, description="a model directory; default: SmolLM2-135M-Instruct")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    max_queue: int = Field(16, ge=1)
    watermark_gamma: float = Field(0.25, gt=0, lt=1)
    watermark_delta: float = Field(2.0, ge=0)
    watermark_z_threshold: float = Field(4.0, gt=0, le=100, description="z at which detection says "
                                         "watermarked (4.0 as Kirchenbauer et al.)")
    allow_unwatermarked: bool = False
    flags_db: str = "runs/flags.sqlite3"
    max_body_bytes: int = Field(1_000_000, ge=1024, le=1_000_000_000,
                                description="request bodies over this get 413, refused while reading")


class Endpoint(_Strict):
    """An OpenAI-compatible API: OpenAI itself, a vLLM server, or this project's serve job.
    The key comes only from the environment variable named here (on Kubernetes, a secret via
    k8s.secret_env); a local server without keys needs none."""

    base_url: str | None = Field(None, description="default: https://api.openai.com/v1")
    model: str = Field(min_length=1)
    api: Literal["chat", "completions"] = Field("chat", description="chat, or legacy completions")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(3072, ge=1, le=1_000_000)
    timeout_seconds: float = Field(120, gt=0)
    max_attempts: int = Field(6, ge=1, le=50, description="per request, for 429/5xx/timeouts")
    backoff_seconds: float = Field(1.0, gt=0, description="first retry delay; doubles, with jitter")
    max_backoff_seconds: float = Field(60, gt=0)
    in_flight: int = Field(4, ge=1, le=256, description="concurrent requests")
    input_usd_per_mtok: float | None = Field(None, ge=0, description="default: price table by model")
    output_usd_per_mtok: float | None = Field(None, ge=0, description="default: price table by model")


class GenerateConfig(_Strict):
    """Self-instruct generation (the recipe of Stanford Alpaca's public generation code)."""

    seeds: str = Field("seeds/seed_tasks.jsonl", description="self-instruct seed JSONL")
    api: Endpoint
    num_instructions: int = Field(100, ge=1, le=10_000_000, description="instructions to keep")
    prompt_examples: int = Field(3, ge=1, le=19, description="seed tasks shown per request")
    tasks_per_request: int = Field(20, ge=2, le=100, description="tasks the prompt asks for")
    rouge_threshold: float = Field(0.7, gt=0, le=1)
    min_words: int = Field(4, ge=1)
    max_words: int = Field(150, ge=1)
    max_usd: float | None = Field(None, gt=0, description="stop before API spend would exceed this")
    max_requests: int | None = Field(None, ge=1, description="stop after this many requests")
    seed: int = 42
    prompt_file: str | None = Field(None, description="your own instruction text (default: ours)")

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")
        if self.prompt_examples >= self.tasks_per_request:
            raise ValueError(f"prompt_examples ({self.prompt_examples}) must be fewer than "
                             f"tasks_per_request ({self.tasks_per_request})")
        return self


class System(_Strict):
    """One side of a comparison: an endpoint, or a model directory the job serves itself."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    endpoint: Endpoint | None = None
    model_dir: str | None = Field(None, description="a model directory, or preset:smollm2-135m-instruct")

    @model_validator(mode="after")
    def _check(self) -> System:
        if (self.endpoint is None) == (self.model_dir is None):
            raise ValueError("give exactly one of endpoint or model_dir")
        return self


class EvaluateConfig(_Strict):
    """Blind pairwise comparison of two systems on an instruction set (self-instruct
    user-oriented JSONL), judged by an LLM in both orders and/or by people in a web page.
    Reported rates are system_a's: put the candidate in system_a, the reference in system_b."""

    instructions: str = Field("seeds/user_oriented_eval.jsonl")
    max_instructions: int | None = Field(None, ge=1)
    system_a: System
    system_b: System
    judge: Endpoint | None = Field(None, description="an LLM judge; none: people only")
    judge_prompt_file: str | None = Field(None, description="your own judge prompt (default: ours)")
    max_new_tokens: int = Field(256, ge=1, le=100_000)
    bootstrap_samples: int = Field(2000, ge=100, le=1_000_000)
    seed: int = 42
    raters_db: str | None = Field(None, description="SQLite of human ratings; default in the run dir")

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        names = (self.system_a.name, self.system_b.name)
        if names[0] == names[1]:
            raise ValueError(f"system_a and system_b need different names (both are {names[0]!r})")
        reserved = {"tie", "invalid", "judge", "llm"} & {n.lower() for n in names}
        if reserved:
            raise ValueError(f"system name {sorted(reserved)[0]!r} is reserved; choose another")
        return self


class JobSpec(_Strict):
    job: str = Field(description="the job kind: generate, train, serve, evaluate (common/kinds.py)")
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    image: str | None = Field(None, description=f"default: from {IMAGE_ENV} (see image_for)")
    runs_dir: str = "runs"
    resources: Resources = Field(default_factory=Resources)
    layout: str = Field("layouts/fsdp2-cpu.yaml", description="layout file, relative to the spec file")
    train: TrainConfig | None = None
    serve: ServeConfig | None = None
    generate: GenerateConfig | None = None
    evaluate: EvaluateConfig | None = None
    cost: CostConfig = Field(default_factory=CostConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    k8s: K8sConfig = Field(default_factory=K8sConfig)

    @field_validator("job")
    @classmethod
    def _known_kind(cls, job: str) -> str:
        if job not in kinds.names():
            raise ValueError(f"unknown job kind {job!r}; the kinds are {', '.join(kinds.names())}")
        return job

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        for section in SECTIONS:  # a kind's own section: required for it, refused for the others
            if section == self.job and getattr(self, section) is None:
                raise ValueError(f"{section}: required for a {self.job} job")
            if section != self.job and getattr(self, section) is not None:
                raise ValueError(f"{section}: not allowed in a {self.job} job")
        if not kinds.get(self.job).per_gpu and self.resources.world_size != 1:
            raise ValueError(f"resources: a {self.job} job runs one process (one GPU at most)")
        if self.train is None:
            return self
        if self.train.tokens_per_micro_step < self.train.max_length:
            raise ValueError(
                f"train.tokens_per_micro_step ({self.train.tokens_per_micro_step}) is smaller than "
                f"train.max_length ({self.train.max_length}): an example that long would not fit "
                f"one packed row; raise it to at least {self.train.max_length}")
        per_step = self.train.micro_batch_size * self.resources.world_size
        if self.train.global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size ({self.train.global_batch_size}) must be a multiple of "
                f"train.micro_batch_size ({self.train.micro_batch_size}) x processes "
                f"({self.resources.world_size}) = {per_step}; change micro_batch_size"
            )
        return self

    @property
    def grad_accum_steps(self) -> int:
        """Micro-steps per optimizer step, derived so the global batch is the same on any size."""
        if self.train is None:
            return 1
        per_step = self.train.micro_batch_size * self.resources.world_size
        return self.train.global_batch_size // per_step


SECTIONS = ("generate", "train", "serve", "evaluate")  # kinds with a section of their own


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(f"{self.name}:{line}: duplicate key {key!r} (first given on line "
                                f"{seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    from alpaca_jobs.common.textfiles import read_utf8

    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    text = read_utf8(path, SpecError)
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: must be a YAML mapping of fields, got {type(data).__name__}")
    return data


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


def _format_validation(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = _valid_fields(model, err["loc"][:-1])
            msg = f"unknown field; valid fields here: {', '.join(valid)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}")
    return "\n".join(lines)


def _valid_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    import typing

    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        options = [ann, *typing.get_args(ann)]  # X, or X | None
        found = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return []
        model = found[0]
    return sorted(model.model_fields)


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation(path, exc, model)) from None


def load_spec(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> LoadedSpec:
    """Load, override and validate a job spec and its layout. Raises SpecError."""
    path = Path(path)
    data = _read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment)
    spec: JobSpec = _validate(JobSpec, data, path)
    if spec.image is None:
        spec = spec.model_copy(update={"image": image_for(spec.job)})
    layout_path = Path(spec.layout)
    if not layout_path.is_absolute():
        layout_path = path.parent / layout_path
    layout: Layout = _validate(Layout, _read_yaml(layout_path), layout_path)
    if spec.resources.gpus_per_node == 0 and layout.mixed_precision != "no":
        raise SpecError(
            f"{path}: layout: {layout_path} asks for {layout.mixed_precision} but the job has no "
            "GPUs; bf16 on CPU is 5-8x slower than fp32. Use a CPU layout (mixed_precision: no)"
        )
    return LoadedSpec(spec=spec, layout=layout, path=path, layout_path=layout_path)


def builtin_spec(data: dict[str, Any], overrides: tuple[str, ...] | list[str] = (),
                 origin: str = "<built-in>") -> LoadedSpec:
    """A spec from data instead of a file (a command's defaults), with ``--set`` overrides and
    the default layout; errors name ``origin``."""
    import copy

    data = copy.deepcopy(data)
    for assignment in overrides:
        apply_override(data, assignment)
    spec: JobSpec = _validate(JobSpec, data, Path(origin))
    if spec.image is None:
        spec = spec.model_copy(update={"image": image_for(spec.job)})
    return LoadedSpec(spec=spec, layout=Layout(), path=Path(origin), layout_path=Path(origin))
