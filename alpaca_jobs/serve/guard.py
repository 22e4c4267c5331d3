"""The guard every HTTP request passes before any route: API keys on /v1, the body read with
a size limit (413 as soon as it is exceeded, not after), the body checked to be UTF-8 JSON of
bounded nesting, every response counted by status, and any exception that escapes a handler
answered as an OpenAI-shaped 500 (and counted) instead of a traceback and a dropped connection.

A plain ASGI middleware: Starlette's BaseHTTPMiddleware would hide client disconnects from the
endpoints (serving._unless_gone).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from alpaca_jobs.serve import protocol as p

MAX_JSON_DEPTH = 32
log = logging.getLogger(__name__)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


class Rejected(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


def error_response(status: int, message: str, type_: str | None = None, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    type_ = type_ or ("server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(p.error_body(message, type_, param, code), status_code=status, headers=headers)


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body`` (strings skipped)."""
    depth = deepest = 0
    for b in _BRACKET.findall(_STRING.sub(b"", body)):
        depth += 1 if b in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def check_body(body: bytes) -> None:
    """Raise Rejected (400) for a body that is not UTF-8 or nests too deeply."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(400, f"the body is not UTF-8 (byte {exc.start})", "invalid_encoding") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise Rejected(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", "too_deep")


def authorized(headers: Any, keys: list[str]) -> bool:
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    ok = False
    for key in keys:  # compare with every key, in constant time each: no early exit
        ok |= secrets.compare_digest(given.encode(), key.encode())
    return ok


class Guard:
    def __init__(self, app: Any, api_keys: list[str], metrics: Any, max_body_bytes: int,
                 known_paths: Iterable[str] = ()) -> None:
        self.app, self.keys, self.m, self.limit = app, api_keys, metrics, max_body_bytes
        self.known = frozenset(known_paths)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [0]

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_and_note)
        except Rejected as exc:
            if not status[0]:
                await error_response(exc.status, exc.message, exc.type, code=exc.code)(scope, receive, send_and_note)
        except Exception as exc:  # noqa: BLE001 - whatever escaped a handler: an OpenAI-shaped 500
            log.exception("request failed: %s %s", scope.get("method"), scope["path"])
            if not status[0]:
                msg = f"the server failed to handle this request ({type(exc).__name__})"
                await error_response(500, msg)(scope, receive, send_and_note)
        finally:
            endpoint = self._endpoint(scope["path"])
            self.m.requests.labels(endpoint, str(status[0] or 500)).inc()
            self.m.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def _handle(self, scope: dict, receive: Any, send: Any) -> None:
        headers = Request(scope).headers
        if scope["path"].startswith("/v1") and self.keys and not authorized(headers, self.keys):
            raise Rejected(401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_api_key",
                           "authentication_error")
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read(headers, receive)
            check_body(body)
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read(self, headers: Any, receive: Any) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise Rejected(413, f"the body ({declared} bytes) is over this server's limit of {self.limit} bytes",
                           "request_too_large")
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Rejected(400, "the client disconnected while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise Rejected(413, f"the body is over this server's limit of {self.limit} bytes", "request_too_large")
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _endpoint(self, path: str) -> str:
        """The metrics label: a route's path, never a caller's made-up path (bounded labels)."""
        if path == "/":
            return "/page"
        return path if path in self.known else "other"


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that hands the app the body already read, then the real channel (disconnects)."""
    sent = [False]

    async def replay() -> dict:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
