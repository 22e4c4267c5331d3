"""The FastAPI app: OpenAI-compatible /v1, health, metrics, flags, watermark check, web page."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from alpaca_jobs.serve import protocol as p
from alpaca_jobs.serve.engine import BadRequest, Engine, GenParams, QueueFull
from alpaca_jobs.serve.flags import FlagStore
from alpaca_jobs.serve.moderation import REFUSAL, moderate
from alpaca_jobs.serve.watermark import detect_text

PAGE = Path(__file__).with_name("page.html")
log = logging.getLogger(__name__)


@dataclass
class ServeState:
    engine: Engine
    flags: FlagStore
    api_keys: list[str] = field(default_factory=list)
    allow_unwatermarked: bool = False
    collectors: list = field(default_factory=list)  # extra /metrics, e.g. the job's own cost


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


def _err(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
         code: str | None = None) -> JSONResponse:
    return JSONResponse(p.error_body(message, type_, param, code), status_code=status)


def create_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="alpaca-jobs serve", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    m = Metrics()
    for collector in state.collectors:
        m.registry.register(collector)
    eng = state.engine

    app.add_middleware(_AuthAndMetrics, state=state, metrics=m)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"] if x != "body")
        return _err(400, f"{loc}: {e['msg']}" if loc else e["msg"], param=loc or None)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception):
        log.exception("request failed")
        return _err(500, f"the server failed to handle this request ({type(exc).__name__})", "server_error")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready", "model": eng.name, "waiting": eng._waiting}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(), headers={"Content-Security-Policy": "default-src 'self'; "
                            "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"})

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": eng.name, "object": "model", "created": eng.created,
                                            "owned_by": "alpaca-jobs"}]}

    def params_of(req: p._Sampling) -> GenParams | JSONResponse:
        if req.model != eng.name:
            return _err(404, f"model {req.model!r} is not served here; this server has {eng.name!r}",
                        param="model", code="model_not_found")
        wm = True if req.watermark is None else req.watermark
        if not wm and not state.allow_unwatermarked:
            return _err(400, "the watermark cannot be turned off on this server", param="watermark")
        return GenParams(max_tokens=req.max_completion_tokens or req.max_tokens or 128,
                         temperature=req.temperature, top_p=req.top_p, stop=tuple(req.stop or ()),
                         seed=req.seed, watermark=wm)

    async def run(kind: str, prompt: str, req: p._Sampling, request: Request | None = None):
        params = params_of(req)
        if isinstance(params, JSONResponse):
            return params
        try:
            ids = eng.encode(prompt, params)
        except BadRequest as exc:
            return _err(400, str(exc), param="max_tokens", code="context_length_exceeded")
        verdict = moderate(prompt)
        if verdict.flagged:
            m.refusals.labels("prompt").inc()
            return _respond(kind, req, REFUSAL, len(ids), 0, "content_filter")
        try:
            if req.stream:
                return StreamingResponse(_sse(kind, req, eng.stream(ids, params)), media_type="text/event-stream")
            gen = await _unless_gone(eng.generate(ids, params), request)
            if gen is None:  # the caller hung up (a client timeout): its row was dropped
                m.abandoned.inc()
                return Response(status_code=499)
        except QueueFull as exc:
            return _err(429, str(exc), "rate_limit_error", code="queue_full")
        m.tokens.labels("prompt").inc(gen.prompt_tokens)
        m.tokens.labels("completion").inc(gen.completion_tokens)
        if moderate(gen.text).flagged:
            m.refusals.labels("output").inc()
            return _respond(kind, req, REFUSAL, gen.prompt_tokens, gen.completion_tokens, "content_filter")
        return _respond(kind, req, gen.text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason)

    async def _sse(kind: str, req, chunks):
        rid = p.new_id("cmpl" if kind == "text" else "chatcmpl")
        created = p.now()
        sent = ""
        try:
            async for delta, final in chunks:
                if final is not None:
                    m.tokens.labels("prompt").inc(final.prompt_tokens)
                    m.tokens.labels("completion").inc(final.completion_tokens)
                    reason = final.finish_reason
                    if moderate(sent).flagged:  # streamed text is checked as a whole at the end
                        m.refusals.labels("output").inc()
                        yield _chunk(kind, rid, created, req.model, "\n\n" + REFUSAL, None)
                        reason = "content_filter"
                    yield _chunk(kind, rid, created, req.model, "", reason)
                    break
                sent += delta
                yield _chunk(kind, rid, created, req.model, delta, None)
        except QueueFull as exc:
            yield f"data: {json.dumps(p.error_body(str(exc), 'rate_limit_error', code='queue_full'))}\n\n"
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(req: p.CompletionRequest, request: Request):
        return await run("text", req.prompt, req, request)

    @app.post("/v1/chat/completions")
    async def chat(req: p.ChatCompletionRequest, request: Request):
        return await run("chat", eng.chat_prompt([x.model_dump() for x in req.messages]), req, request)

    @app.post("/v1/moderations")
    async def moderations(req: p.ModerationRequest):
        from alpaca_jobs.serve.moderation import local_moderate

        items = [req.input] if isinstance(req.input, str) else req.input
        results = []
        for text in items:
            v = local_moderate(text)
            results.append({"flagged": v.flagged, "categories": v.categories,
                            "category_scores": {k: float(x) for k, x in v.categories.items()}})
        return {"id": p.new_id("modr"), "model": "alpaca-jobs-local-rules", "results": results}

    @app.post("/v1/watermark/detect")
    async def detect(req: p.DetectRequest):
        if eng.watermark is None:
            return _err(400, "this server has no watermark configured")
        return detect_text(req.text, eng.tok, eng.watermark, eng.vocab).as_dict()

    @app.post("/v1/flags")
    async def flag(req: p.FlagRequest):
        fid = state.flags.add(req.prompt, req.output, req.reason, req.model or eng.name, req.params)
        m.flags.inc()
        return {"id": fid, "object": "flag", "stored": True}

    return app


def _authorized(request: Request, keys: list[str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    ok = False
    for key in keys:  # compare with every key, in constant time each: no early exit
        ok |= secrets.compare_digest(given.encode(), key.encode())
    return ok


def _respond(kind: str, req, text: str, prompt_tokens: int, completion_tokens: int, reason: str) -> dict:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if kind == "text":
        return {"id": p.new_id("cmpl"), "object": "text_completion", "created": p.now(), "model": req.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}], "usage": usage}
    return {"id": p.new_id("chatcmpl"), "object": "chat.completion", "created": p.now(), "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": reason}], "usage": usage}


class _AuthAndMetrics:
    """API keys on /v1 and request metrics, as a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would hide client disconnects from the endpoints (_unless_gone)."""

    def __init__(self, app, state: ServeState, metrics: Metrics) -> None:
        self.app, self.state, self.m = app, state, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        status = [500]

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if path.startswith("/v1") and self.state.api_keys and not _authorized(Request(scope), self.state.api_keys):
            resp = _err(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                        "authentication_error", code="invalid_api_key")
            await resp(scope, receive, send_and_note)
        else:
            await self.app(scope, receive, send_and_note)
        endpoint = path if path.startswith(("/v1", "/health", "/ready", "/metrics")) else "/page"
        self.m.requests.labels(endpoint, str(status[0])).inc()
        self.m.latency.labels(endpoint).observe(time.perf_counter() - start)


async def _unless_gone(work, request: Request | None, poll_s: float = 0.5):
    """Await ``work`` unless the client disconnects first; then cancel it (the engine drops
    the request's row from its batch) and return None. A client that timed out and retried
    must not leave its abandoned generation holding the decoder and the queue."""
    import asyncio

    task = asyncio.ensure_future(work)
    if request is None:
        return await task
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll_s)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return None


def _chunk(kind: str, rid: str, created: int, model: str, delta: str, reason: str | None) -> str:
    if kind == "text":
        body = {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": delta, "logprobs": None, "finish_reason": reason}]}
    else:
        d = {"content": delta} if delta or reason is None else {}
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": reason}]}
    return f"data: {json.dumps(body)}\n\n"
