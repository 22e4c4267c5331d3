"""OpenAI request and response shapes (the fields this server honours), in OpenAI's field order.

Requests: unknown fields are accepted and ignored, as OpenAI's own API does for forward
compatibility. Known fields are strict, as OpenAI is: no bool for an integer, no number for a
string, no NaN or infinity, no lone UTF-16 surrogate in text, and every number and list bounded
to what the engine can take. A violation is a 400 naming the field.
Responses and stream chunks are models too: handlers never build response dicts by hand.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from alpaca_jobs.serve.params import SEED_MAX

MAX_TEXT = 200_000  # characters in one prompt, message, output or detected text
MAX_MESSAGES = 256
MAX_STOP = 4  # OpenAI's own limit on stop sequences
MAX_STOP_CHARS = 256
MAX_TOKENS = 1_000_000  # a static bound; the engine's own limit and context window are checked after
MAX_MODERATION_INPUTS = 64
MAX_MODERATION_CHARS = 32_000
MAX_FLAG_PARAMS_BYTES = 4096


def _no_surrogates(text: str) -> str:
    """Refuse a lone UTF-16 surrogate (JSON lets "\\ud800" through; UTF-8 cannot hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid text: lone surrogate at character {exc.start}") from None
    return text


Text = Annotated[str, AfterValidator(_no_surrogates)]
StopText = Annotated[Text, Field(max_length=MAX_STOP_CHARS)]
ModerationText = Annotated[Text, Field(max_length=MAX_MODERATION_CHARS)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class ChatMessage(_Req):
    role: Literal["system", "user", "assistant"]
    content: Text = Field(max_length=MAX_TEXT)


class _Sampling(_Req):
    model: Text = Field(max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="only n=1 is served")
    stream: bool = False
    stop: StopText | list[StopText] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    user: Text | None = Field(None, max_length=256)
    # Project-specific (not OpenAI): turn the watermark off for one request, where allowed.
    watermark: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        return stops


class CompletionRequest(_Sampling):
    prompt: Text = Field(max_length=MAX_TEXT)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    # Project-specific (not OpenAI): the Alpaca with-input section (the instruction's context).
    input: Text | None = Field(None, max_length=MAX_TEXT)


class ModerationRequest(_Req):
    input: ModerationText | list[ModerationText]
    model: Text | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _count(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not 1 <= len(v) <= MAX_MODERATION_INPUTS:
            raise ValueError(f"give 1 to {MAX_MODERATION_INPUTS} inputs per request")
        return v


class DetectRequest(_Req):
    text: Text = Field(min_length=1, max_length=50_000)  # each token costs a green list: bounded


def _finite_json(v: Any, path: str = "params") -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{path}: NaN and infinity are not JSON")
    if isinstance(v, str):
        _no_surrogates(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            _no_surrogates(k)
            _finite_json(x, f"{path}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _finite_json(x, f"{path}[{i}]")


class FlagRequest(_Req):
    prompt: Text = Field(max_length=MAX_TEXT)
    output: Text = Field(max_length=MAX_TEXT)
    reason: Text = Field(min_length=1, max_length=2000)
    model: Text | None = Field(None, max_length=256)
    params: dict[str, Any] = Field(default_factory=dict, description="the sampling parameters used")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        _finite_json(v)
        size = len(json.dumps(v, allow_nan=False).encode())
        if size > MAX_FLAG_PARAMS_BYTES:
            raise ValueError(f"{size} bytes as JSON; at most {MAX_FLAG_PARAMS_BYTES}")
        return v


# -- responses ------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


FinishReason = Literal["stop", "length", "content_filter"]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: now())
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: now())
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "alpaca-jobs"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class ModerationResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("modr"))
    model: str = "alpaca-jobs-local-rules"
    results: list[ModerationResult]


class DetectResponse(BaseModel):  # project-specific endpoint
    tokens_scored: int
    green_tokens: int
    z_score: float
    p_value: float
    watermarked: bool


class FlagResponse(BaseModel):  # project-specific endpoint
    id: int
    object: Literal["flag"] = "flag"
    stored: bool = True


class Health(BaseModel):
    status: str
    model: str | None = None
    waiting: int | None = None


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorInfo(message=message, type=type_, param=param, code=code)).model_dump()
