"""The serving layer: what each endpoint does, with the engine, flag store and metrics injected
(vLLM's ``serving_*.py`` pattern). Handlers return protocol models or raise ``ApiError``;
app.py only routes. Blocking work (moderation, detection, SQLite) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel

from alpaca_jobs.serve import protocol as p
from alpaca_jobs.serve.moderation import REFUSAL, local_moderate, moderate
from alpaca_jobs.serve.params import BadRequest, Generation, GenParams, QueueFull, RowFailed
from alpaca_jobs.serve.watermark import detect_text

if TYPE_CHECKING:
    from alpaca_jobs.serve.engine import Engine
    from alpaca_jobs.serve.flags import FlagStore

log = logging.getLogger(__name__)
Route = Literal["text", "chat"]  # the OpenAI route a request came through: completions or chat


class ApiError(Exception):
    """An error the client gets as OpenAI-shaped JSON with this status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return p.error_body(self.message, self.type, self.param, self.code)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("alpaca_serve_requests_total", "HTTP requests", ["endpoint", "status"], registry=r)
        self.tokens = Counter("alpaca_serve_tokens_total", "Tokens processed", ["kind"], registry=r)
        self.latency = Histogram("alpaca_serve_request_duration_seconds", "Request latency", ["endpoint"],
                                 registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.refusals = Counter("alpaca_serve_refusals_total", "Moderation refusals", ["stage"], registry=r)
        self.flags = Counter("alpaca_serve_flags_total", "Outputs flagged by users", registry=r)
        self.abandoned = Counter("alpaca_serve_abandoned_total",
                                 "Requests whose client disconnected before the reply", registry=r)
        self.stream_errors = Counter("alpaca_serve_stream_errors_total",
                                     "Streams that ended with an error event after their 200 headers",
                                     ["type"], registry=r)


@dataclass
class Gone:
    """The client hung up before its reply (answered 499, counted as abandoned)."""


@dataclass
class OpenAIServing:
    engine: Engine
    flags: FlagStore
    metrics: Metrics
    allow_unwatermarked: bool = False

    # -- generation ----------------------------------------------------------------------------
    def params_of(self, req: p._Sampling) -> GenParams:
        eng = self.engine
        if req.model != eng.name:
            raise ApiError(404, f"model {req.model!r} is not served here; this server has {eng.name!r}",
                           param="model", code="model_not_found")
        wm = True if req.watermark is None else req.watermark
        if not wm and not self.allow_unwatermarked:
            raise ApiError(400, "the watermark cannot be turned off on this server", param="watermark")
        return GenParams(max_tokens=req.max_completion_tokens or req.max_tokens or 128,
                         temperature=req.temperature, top_p=req.top_p, stop=tuple(req.stop or ()),
                         seed=req.seed, watermark=wm)

    def chat_prompt(self, req: p.ChatCompletionRequest) -> str:
        return self.engine.chat_prompt([m.model_dump() for m in req.messages], req.input or "")

    async def create(self, route: Route, prompt: str, req: p._Sampling,
                     disconnected: Any = None) -> BaseModel | AsyncIterator[str] | Gone:
        """A completion (route "text") or chat completion: a response model, an SSE stream, or
        Gone. ``disconnected`` is an async callable telling whether the client left."""
        params = self.params_of(req)
        try:
            ids = self.engine.encode(prompt, params)
        except BadRequest as exc:
            raise ApiError(400, str(exc), param="max_tokens", code="context_length_exceeded") from None
        if (await asyncio.to_thread(moderate, prompt)).flagged:
            self.metrics.refusals.labels("prompt").inc()
            return _response(route, req.model, REFUSAL, len(ids), 0, "content_filter")
        if req.stream:
            if self.engine.waiting >= self.engine.max_queue:  # refuse before the 200 headers go out
                raise ApiError(429, f"{self.engine.waiting} requests are queued or running; try again shortly",
                               "rate_limit_error", code="queue_full")
            return self._sse(route, req.model, self.engine.stream(ids, params))
        try:
            gen = await _unless_gone(self.engine.generate(ids, params), disconnected)
        except QueueFull as exc:
            raise ApiError(429, str(exc), "rate_limit_error", code="queue_full") from None
        except RowFailed as exc:
            raise ApiError(500, f"generation failed: {exc}", "server_error") from None
        if gen is None:  # the caller hung up (a client timeout): its row was dropped
            self.metrics.abandoned.inc()
            return Gone()
        return await self._finish(route, req.model, gen)

    async def _finish(self, route: Route, model: str, gen: Generation) -> BaseModel:
        self._count(gen)
        if (await asyncio.to_thread(moderate, gen.text)).flagged:
            self.metrics.refusals.labels("output").inc()
            return _response(route, model, REFUSAL, gen.prompt_tokens, gen.completion_tokens, "content_filter")
        return _response(route, model, gen.text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason)

    def _count(self, gen: Generation) -> None:
        self.metrics.tokens.labels("prompt").inc(gen.prompt_tokens)
        self.metrics.tokens.labels("completion").inc(gen.completion_tokens)

    async def _sse(self, route: Route, model: str, chunks: AsyncIterator) -> AsyncIterator[str]:
        """Server-sent events. A failure after the headers ends the stream with an OpenAI-style
        error event, then ``[DONE]``, as the OpenAI client expects."""
        chunk = _Chunker(route, model)
        sent = ""
        try:
            async with contextlib.aclosing(chunks):  # a client that leaves frees its row at once
                async for delta, final in chunks:
                    if final is not None:
                        self._count(final)
                        reason = final.finish_reason
                        if (await asyncio.to_thread(moderate, sent)).flagged:  # checked whole, at the end
                            self.metrics.refusals.labels("output").inc()
                            yield chunk("\n\n" + REFUSAL, None)
                            reason = "content_filter"
                        yield chunk("", reason)
                        break
                    sent += delta
                    yield chunk(delta, None)
        except QueueFull as exc:
            self.metrics.stream_errors.labels("rate_limit_error").inc()
            yield _event(p.error_body(str(exc), "rate_limit_error", code="queue_full"))
        except Exception as exc:  # noqa: BLE001 - the headers are gone: an error event is all we can send
            log.exception("stream failed")
            self.metrics.stream_errors.labels("server_error").inc()
            yield _event(p.error_body(f"generation failed: {_short(exc)}", "server_error"))
        yield "data: [DONE]\n\n"

    # -- other endpoints -------------------------------------------------------------------------
    def models(self) -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=self.engine.name, created=self.engine.created)])

    async def moderations(self, req: p.ModerationRequest) -> p.ModerationResponse:
        items = [req.input] if isinstance(req.input, str) else req.input
        verdicts = await asyncio.to_thread(lambda: [local_moderate(t) for t in items])
        return p.ModerationResponse(results=[p.ModerationResult(
            flagged=v.flagged, categories=v.categories,
            category_scores={k: float(x) for k, x in v.categories.items()}) for v in verdicts])

    async def detect(self, req: p.DetectRequest) -> p.DetectResponse:
        eng = self.engine
        if eng.watermark is None:
            raise ApiError(400, "this server has no watermark configured")
        found = await asyncio.to_thread(detect_text, req.text, eng.tok, eng.watermark, eng.vocab)
        return p.DetectResponse(**found.as_dict())

    async def flag(self, req: p.FlagRequest) -> p.FlagResponse:
        fid = await asyncio.to_thread(self.flags.add, req.prompt, req.output, req.reason,
                                      req.model or self.engine.name, req.params)
        self.metrics.flags.inc()
        return p.FlagResponse(id=fid)


def _short(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, RowFailed) else type(exc).__name__


def _event(body: dict[str, Any] | BaseModel) -> str:
    data = body.model_dump_json() if isinstance(body, BaseModel) else p.ErrorResponse(**body).model_dump_json()
    return f"data: {data}\n\n"


def _response(route: Route, model: str, text: str, prompt_tokens: int, completion_tokens: int,
              reason: str) -> BaseModel:
    usage = p.Usage.of(prompt_tokens, completion_tokens)
    if route == "text":
        return p.CompletionResponse(model=model, usage=usage,
                                    choices=[p.CompletionChoice(text=text, finish_reason=reason)])
    return p.ChatCompletionResponse(model=model, usage=usage, choices=[
        p.ChatChoice(message=p.AssistantMessage(content=text), finish_reason=reason)])


class _Chunker:
    """One stream's chunks: the same id and creation time on every chunk, as OpenAI sends."""

    def __init__(self, route: Route, model: str) -> None:
        self.route, self.model = route, model
        self.id = p.new_id("cmpl" if route == "text" else "chatcmpl")
        self.created = p.now()

    def __call__(self, delta: str, reason: str | None) -> str:
        if self.route == "text":
            return _event(p.CompletionResponse(id=self.id, created=self.created, model=self.model,
                                               choices=[p.CompletionChoice(text=delta, finish_reason=reason)]))
        d = p.DeltaMessage(content=delta) if delta or reason is None else p.DeltaMessage()
        return _event(p.ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                            choices=[p.ChatChunkChoice(delta=d, finish_reason=reason)]))


async def _unless_gone(work: Awaitable, disconnected: Any, poll_s: float = 0.5) -> Any:
    """Await ``work`` unless the client disconnects first; then cancel it (the engine drops
    the request's row from its batch) and return None. A client that timed out and retried
    must not leave its abandoned generation holding the decoder and the queue."""
    task = asyncio.ensure_future(work)
    if disconnected is None:
        return await task
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll_s)
        if done:
            return task.result()
        if await disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return None
