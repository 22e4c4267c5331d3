"""People as judges: a web page that shows one request and two unlabelled answers, and records
which is better (or a tie) in SQLite.

Blind: the page and its API never name a system; which answer is on the left is fixed per
(rater, item) by a seeded hash, so a rater who reloads sees the same order and different raters
see different orders. The server records which system was shown where; a choice is stored as
the system preferred. Raters work through the items in file order (overlap between raters is
what makes agreement measurable) and resume where they stopped. Nothing secret is served:
no keys, no system names, no reference answers.

``alpaca-jobs rate RUN_DIR`` serves it; the next report counts the ratings.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from alpaca_jobs.evaluate.collect import output_key
from alpaca_jobs.evaluate.instructions import Item
from alpaca_jobs.evaluate.ratings import Ratings, left_right

RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
CHOICES = ("A", "B", "tie")  # A = the left answer, B = the right one
MAX_BODY = 16 * 1024


def _error(status: int, message: str, type_: str = "invalid_request") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_}}, status_code=status)


def create_rating_app(items: list[Item], outputs: dict, names: tuple[str, str], store: Ratings,
                      seed: int) -> FastAPI:
    from alpaca_jobs.evaluate.page import RATE_PAGE

    ready = [it for it in items if all(output_key(it.id, n) in outputs for n in names)]
    by_id = {it.id: it for it in ready}
    app = FastAPI(title="alpaca-jobs rating", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_shapes(app)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(RATE_PAGE, headers={"Content-Security-Policy": "default-src 'self'; "
                            "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    @app.get("/api/next")
    async def next_item(rater: str = ""):
        if not RATER.match(rater):
            return _error(400, "rater: give a name of 1-40 letters, digits, '.', '_' or '-'")
        return _next_for(rater, ready, outputs, names, store, seed)

    @app.post("/api/ratings")
    async def rate(request: Request):
        body = await _read_limited(request)
        if isinstance(body, JSONResponse):
            return body
        problem = _check_rating(body, by_id)
        if problem:
            return problem
        rater, item = body["rater"], body["item"]
        left, right = left_right(seed, rater, item, names)
        store.put(rater, item, left, right, body["choice"])
        done = store.rated(rater)
        return {"stored": True, "progress": {"rated": len(done & by_id.keys()), "total": len(ready)}}

    @app.get("/api/progress")
    async def progress():
        prefs = store.preferences()
        return {"total": len(ready),
                "raters": {r: len(v.keys() & by_id.keys()) for r, v in sorted(prefs.items())}}

    return app


def _install_error_shapes(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "http_error")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        e = exc.errors()[0]
        return _error(400, f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}")


def _next_for(rater: str, ready: list[Item], outputs: dict, names: tuple[str, str], store: Ratings,
              seed: int) -> dict:
    """The rater's next unrated item, its two outputs in this rater's blind order."""
    done = store.rated(rater)
    progress = {"rated": len(done & {it.id for it in ready}), "total": len(ready)}
    todo = next((it for it in ready if it.id not in done), None)
    if todo is None:
        return {"rater": rater, "item": None, "progress": progress}
    left, right = left_right(seed, rater, todo.id, names)
    shown = [outputs[output_key(todo.id, s)]["output"] for s in (left, right)]
    return {"rater": rater, "progress": progress,
            "item": {"id": todo.id, "instruction": todo.instruction, "input": todo.input, "outputs": shown}}


async def _read_limited(request: Request) -> dict | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return _error(413, f"request body over {MAX_BODY} bytes", "too_large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes", "too_large")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, 'body: send JSON {"rater": ..., "item": ..., "choice": "A" | "B" | "tie"}')
    if not isinstance(body, dict):
        return _error(400, "body: must be a JSON object")
    return body


def _check_rating(body: dict[str, Any], by_id: dict[str, Item]) -> JSONResponse | None:
    extra = set(body) - {"rater", "item", "choice"}
    if extra:
        return _error(400, f"unknown field(s) {sorted(extra)}; send rater, item and choice")
    rater, item, choice = body.get("rater"), body.get("item"), body.get("choice")
    if not isinstance(rater, str) or not RATER.match(rater):
        return _error(400, "rater: give a name of 1-40 letters, digits, '.', '_' or '-'")
    if choice not in CHOICES:
        return _error(400, "choice: must be \"A\" (left), \"B\" (right) or \"tie\"")
    if not isinstance(item, str) or item not in by_id:
        return _error(404, "item: no such item in this evaluation", "not_found")
    return None
