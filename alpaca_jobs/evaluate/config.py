"""The evaluate section of a job spec: the two systems compared and how they are judged."""

from __future__ import annotations

from pydantic import Field, model_validator

from alpaca_jobs.common.config import Section, Strict
from alpaca_jobs.common.endpoint import Endpoint


class System(Strict):
    """One side of a comparison: an endpoint, or a model directory the job serves itself."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    endpoint: Endpoint | None = None
    model_dir: str | None = Field(None, description="a model directory, or preset:smollm2-135m-instruct")

    @model_validator(mode="after")
    def _check(self) -> System:
        if (self.endpoint is None) == (self.model_dir is None):
            raise ValueError("give exactly one of endpoint or model_dir")
        return self


class EvaluateConfig(Section):
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
