"""An OpenAI-compatible endpoint, as the generate and evaluate sections name one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alpaca_jobs.common.config import Strict


class Endpoint(Strict):
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
