"""The FastAPI app: thin routers over the serving layer (serving.py), plus the guard every
request passes first (guard.py: API keys, body size and JSON checks, metrics by status, and
OpenAI-shaped errors from any layer, 500s included)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from alpaca_jobs.serve import protocol as p
from alpaca_jobs.serve.engine import Engine
from alpaca_jobs.serve.flags import FlagStore
from alpaca_jobs.serve.guard import Guard, error_response
from alpaca_jobs.serve.serving import ApiError, Gone, Metrics, OpenAIServing

PAGE = Path(__file__).with_name("page.html")
DEFAULT_MAX_BODY_BYTES = 1_000_000
log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERRORS = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


@dataclass
class ServeState:
    engine: Engine
    flags: FlagStore
    api_keys: list[str] = field(default_factory=list)
    allow_unwatermarked: bool = False
    collectors: list = field(default_factory=list)  # extra /metrics, e.g. the job's own cost
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def create_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="alpaca-jobs serve", docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  responses={400: {"model": p.ErrorResponse}})
    m = Metrics()
    for collector in state.collectors:
        m.registry.register(collector)
    serving = OpenAIServing(state.engine, state.flags, m, state.allow_unwatermarked)
    _handlers(app)
    _routes(app, serving, m)
    _exact_integer_bounds(app)
    app.add_middleware(Guard, api_keys=state.api_keys, metrics=m, max_body_bytes=state.max_body_bytes,
                       known_paths=[r.path for r in app.routes])
    return app


_BOUNDS = ("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum")


def _walk(node: object):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _exact_integer_bounds(app: FastAPI) -> None:
    """FastAPI's OpenAPI models hold numeric bounds as floats, so the seed's bound 2**63-1 came out
    as 9.223372036854776e+18 (which is 2**63) and 0 as 0.0. Integer fields get back the exact
    integers of pydantic's own schemas of the request models."""
    exact: dict[float, int] = {}
    for model in vars(p).values():
        if isinstance(model, type) and issubclass(model, BaseModel) and model is not BaseModel:
            for node in _walk(model.model_json_schema()):
                exact.update({float(node[k]): node[k] for k in _BOUNDS if isinstance(node.get(k), int)})
    build = app.openapi

    def openapi() -> dict:
        fresh = app.openapi_schema is None
        doc = build()  # cached by FastAPI after the first call
        if fresh:
            for node in _walk(doc):
                if node.get("type") == "integer":
                    node.update({k: exact[node[k]] for k in _BOUNDS if node.get(k) in exact})
        return doc

    app.openapi = openapi


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"][1:] if isinstance(x, int) or _NAME.match(str(x)))
        msg = e["msg"] if e["type"] != "json_invalid" else "the body is not valid JSON"
        return error_response(400, f"{loc}: {msg}" if loc else msg, param=loc or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), code=_ERRORS.get(exc.status_code),
                              headers=getattr(exc, "headers", None))


def _routes(app: FastAPI, serving: OpenAIServing, m: Metrics) -> None:
    eng = serving.engine

    @app.get("/healthz")
    async def healthz() -> p.Health:
        return p.Health(status="ok")

    @app.get("/readyz")
    async def readyz() -> p.Health:
        return p.Health(status="ready", model=eng.name, waiting=eng.waiting)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(), headers={"Content-Security-Policy": "default-src 'self'; "
                            "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"})

    @app.get("/v1/models")
    async def models() -> p.ModelList:
        return serving.models()

    @app.post("/v1/completions", response_model=p.CompletionResponse)
    async def completions(req: p.CompletionRequest, request: Request) -> Response:
        return _reply(await serving.create("text", req.prompt, req, request.is_disconnected))

    @app.post("/v1/chat/completions", response_model=p.ChatCompletionResponse)
    async def chat(req: p.ChatCompletionRequest, request: Request) -> Response:
        return _reply(await serving.create("chat", serving.chat_prompt(req), req, request.is_disconnected))

    @app.post("/v1/moderations")
    async def moderations(req: p.ModerationRequest) -> p.ModerationResponse:
        return await serving.moderations(req)

    @app.post("/v1/watermark/detect")
    async def detect(req: p.DetectRequest) -> p.DetectResponse:
        return await serving.detect(req)

    @app.post("/v1/flags")
    async def flag(req: p.FlagRequest) -> p.FlagResponse:
        return await serving.flag(req)


def _reply(result: object) -> Response:
    if isinstance(result, Gone):
        return Response(status_code=499)
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), media_type="application/json")
    return StreamingResponse(result, media_type="text/event-stream")
