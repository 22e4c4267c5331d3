"""A pipeline file: the four stages as ordinary job specs, wired together by placeholders.

```yaml
pipeline: alpaca-pipeline-local
runs_dir: runs
teacher: {spec: serve-local.yaml, set: [serve.port=8101]}     # or {url: ..., model: ...}
stages:
  generate: {spec: generate-local.yaml, set: ["generate.api.base_url=${teacher.url}"]}
  train:    {spec: train-local.yaml,    set: ["train.data=${generate.data}"]}
  serve:    {spec: serve-local.yaml,    set: ["serve.model=${train.model}"]}
  evaluate: {spec: evaluate-local.yaml, set: ["evaluate.system_b.model_dir=${train.model}"]}
```

Placeholders name what an earlier stage leaves behind: ``${teacher.url}``,
``${teacher.model}``, ``${generate.data}`` (its alpaca_data.json), ``${train.model}`` (its
consolidated model directory), ``${serve.url}``, ``${serve.model}``, ``${pipeline.id}``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from alpaca_jobs.common import kinds
from alpaca_jobs.common.config import Strict, read_yaml, validate
from alpaca_jobs.common.errors import SpecError

PLACEHOLDER = re.compile(r"\$\{([a-z]+\.[a-z]+)\}")


class Stage(Strict):
    spec: str = Field(description="a job spec, relative to the pipeline file")
    set: list[str] = Field(default_factory=list, description="overrides, FIELD=VALUE")


class Teacher(Strict):
    """The model that writes the data and judges the comparison: a serve job the pipeline
    starts (``spec``, local only) or an endpoint that already runs (``url`` + ``model``)."""

    spec: str | None = None
    set: list[str] = Field(default_factory=list)
    url: str | None = None
    model: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Teacher:
        if (self.spec is None) == (self.url is None):
            raise ValueError("give either spec (a serve job to start) or url (+ model)")
        if self.url and not self.model:
            raise ValueError("model is required with url")
        return self


class PipelineSpec(Strict):
    pipeline: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$")
    runs_dir: str = "runs"
    teacher: Teacher | None = None
    stages: dict[str, Stage]

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        jobs = kinds.names()
        unknown = [s for s in self.stages if s not in jobs]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(jobs)}")
        order = [s for s in jobs if s in self.stages]
        for i, stage in enumerate(order):
            for assignment in self.stages[stage].set:
                for ref in PLACEHOLDER.findall(assignment):
                    source = ref.split(".")[0]
                    if source == "teacher" and self.teacher is None:
                        raise ValueError(f"stages.{stage}: ${{{ref}}} needs a teacher section")
                    if source in jobs and source not in order[:i]:
                        raise ValueError(f"stages.{stage}: ${{{ref}}} refers to a stage that does "
                                         "not run before it")
        return self

    @property
    def order(self) -> list[str]:
        return [s for s in kinds.names() if s in self.stages]


def load_pipeline(path: str | Path) -> PipelineSpec:
    path = Path(path)
    return validate(PipelineSpec, read_yaml(path), path)


def resolve(assignments: list[str], values: dict[str, str], where: str) -> list[str]:
    """Fill the placeholders in ``assignments`` from ``values``."""
    out = []
    for a in assignments:
        def sub(m: re.Match) -> str:
            if m.group(1) not in values:
                raise SpecError(f"{where}: ${{{m.group(1)}}} is not known here; known: "
                                f"{', '.join(sorted(values))}")
            return values[m.group(1)]

        out.append(PLACEHOLDER.sub(sub, a))
    return out
