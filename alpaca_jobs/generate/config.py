"""The generate section of a job spec: self-instruct generation (the recipe of Stanford
Alpaca's public generation code). Imports no HTTP client."""

from __future__ import annotations

from pydantic import Field, model_validator

from alpaca_jobs.common.config import Section
from alpaca_jobs.common.endpoint import Endpoint


class GenerateConfig(Section):
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
