"""OpenAI request/response shapes (the fields this server honours), in OpenAI's field order.

Unknown fields are accepted and ignored, as OpenAI's own API does for forward compatibility;
wrong types and out-of-range values are 400s naming the field.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Req):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class _Sampling(_Req):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="only n=1 is served")
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    # Project-specific (not OpenAI): turn the watermark off for one request, where allowed.
    watermark: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops


class CompletionRequest(_Sampling):
    prompt: str = Field(max_length=200_000)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class ModerationRequest(_Req):
    input: str | list[str]
    model: str | None = None


class DetectRequest(_Req):
    text: str = Field(min_length=1, max_length=200_000)


class FlagRequest(_Req):
    prompt: str = Field(max_length=200_000)
    output: str = Field(max_length=200_000)
    reason: str = Field(min_length=1, max_length=2000)
    model: str | None = None
    params: dict = Field(default_factory=dict)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
