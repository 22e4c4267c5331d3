"""Fuzzing the HTTP API of a real server (tiny-llama preset, loopback): bodies generated from the
app's own OpenAPI schema, then made hostile (wrong types, huge ints, NaN, lone surrogates, deep
nesting, junk bytes). Every answer must be < 500 and, when an error, OpenAI-shaped; the server
must be healthy after, with no 5xx in its metrics and no traceback in its log.

hypothesis-jsonschema would turn the schema into strategies, but its 0.23.1 breaks on the
hypothesis 6.17x internals (AttributeError: 'many' object has no attribute 'more'), so the
small subset of JSON Schema that FastAPI emits for our models is mapped here by hand.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_serve import running_server
from tests.test_serve_hardening import ENV, call

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = 300
ROUTES = ["/v1/completions", "/v1/chat/completions", "/v1/moderations", "/v1/watermark/detect", "/v1/flags"]


def from_schema(schema: dict, components: dict, model: str) -> st.SearchStrategy:
    """A strategy for JSON values valid (or nearly) against an OpenAPI schema fragment."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components, model))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, model) for s in schema["anyOf"]])
    if "const" in schema or "enum" in schema:
        return st.sampled_from(schema.get("enum") or [schema["const"]])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = {k: from_schema(props[k], components, model) for k in schema.get("required", [])}
        optional = {k: from_schema(v, components, model) for k, v in props.items() if k not in required}
        if "model" in required:  # the served model half the time, so bodies get past the 404
            required["model"] = st.one_of(st.just(model), required["model"])
        if not props:
            return st.dictionaries(st.text(max_size=8), st.integers() | st.floats() | st.text(max_size=8), max_size=4)
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, model), max_size=6)
    if kind == "string":
        return st.text(max_size=min(int(schema.get("maxLength", 64)), 64))
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        lo = None if lo is None else math.ceil(lo)
        edges = [x for x in (lo, hi and int(hi), 2**63 - 1, 2**63, 2**64, -1, 0) if x is not None]
        edges += [lo - 1] if lo is not None else []
        hi = min(int(hi), 16) if hi is not None and lo is not None and lo >= 1 else hi  # few tokens: fast
        return st.integers(lo, None if hi is None else int(hi)) | st.sampled_from(edges)
    if kind == "number":
        return st.floats(schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum"),
                         allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.none()


HOSTILE = st.one_of(
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, True, False, None, [], {}, "", "\ud800",
                     "a\udfffb", "\x00", "\u202e", 1e308, -0.0, 5e-324]),
    st.integers(), st.floats(), st.text(max_size=40), st.binary(max_size=20).map(lambda b: b.hex()),
    st.recursive(st.integers() | st.text(max_size=4), lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.text(max_size=4), c, max_size=3), max_leaves=10),
)


def encode(body: Any) -> bytes:
    """JSON as Python writes it (NaN and Infinity included), lone surrogates kept as escapes."""
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def requests(draw: st.DrawFn, schemas: dict, components: dict, model: str) -> tuple[str, str, bytes]:
    route = draw(st.sampled_from(ROUTES))
    body = draw(schemas[route])
    how = draw(st.sampled_from(["valid", "field", "extra", "nan", "deep", "junk", "method", "path"]))
    if how == "field" and isinstance(body, dict) and body:
        for key in draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=3)):
            body[key] = draw(HOSTILE)
    elif how == "extra" and isinstance(body, dict):
        body[draw(st.text(max_size=10))] = draw(HOSTILE)
    elif how == "nan" and isinstance(body, dict) and body:
        body[draw(st.sampled_from(sorted(body)))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    raw = encode(body)
    if how == "deep":
        depth = draw(st.integers(10, 200_000))
        raw = b'{"model": ' + b"[" * depth + b"]" * depth + b"}"
    elif how == "junk":
        raw = draw(st.binary(max_size=200))
    elif how == "method":
        return draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH"])), route, raw
    elif how == "path":
        return "POST", "/v1/" + draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                                          exclude_characters="?#%"), max_size=20)), raw
    return "POST", route, raw


def problem(status: int, raw: bytes) -> str | None:
    """What is wrong with one answer, or None."""
    if status >= 500:
        return f"{status}"
    try:
        if status >= 400:
            err = json.loads(raw)["error"]
            ok = set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)
            return None if ok else "error not OpenAI-shaped"
        if raw.startswith(b"data: "):  # a stream: events, no server error, [DONE] last
            events = [e for e in raw.decode().split("\n\n") if e]
            return None if events[-1] == "data: [DONE]" and "server_error" not in raw.decode() else "bad stream"
        json.loads(raw)
    except (ValueError, KeyError, TypeError):
        return "body not OpenAI-shaped JSON"
    return None


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("fuzz")
    with running_server(tmp, ENV, "--model", str(tiny_dir), "--set", "serve.max_queue=64") as base:
        yield base, tmp


def test_fuzz_the_api_from_its_own_schema(srv):
    base, tmp = srv
    model = json.loads(call(base, "GET", "/readyz")[1])["model"]
    doc = json.loads(call(base, "GET", "/openapi.json")[1])
    components = doc["components"]["schemas"]
    schemas = {r: from_schema(doc["paths"][r]["post"]["requestBody"]["content"]["application/json"]["schema"],
                              components, model) for r in ROUTES}
    seen: Counter = Counter()
    bad: list[tuple[str, str, bytes, int, bytes]] = []
    t0 = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(schemas, components, model))
    def one(req: tuple[str, str, bytes]) -> None:
        status, raw = call(base, *req)
        seen[status // 100 * 100] += 1
        if (what := problem(status, raw)) is not None:
            seen[what] += 1
            bad.append((*req, status, raw[:200]))

    one()  # every input is tried and recorded; the asserts below see them all
    health = call(base, "GET", "/healthz")
    metrics = call(base, "GET", "/metrics")[1].decode()
    fivexx = [line for line in metrics.splitlines() if line.startswith("alpaca_serve_requests_total")
              and 'status="5' in line]
    tracebacks = (tmp / "server.log").read_text().count("Traceback")
    print(f"\nfuzz: {seen.total() - sum(v for k, v in seen.items() if isinstance(k, str))} inputs, "
          f"{dict(seen)}, {tracebacks} tracebacks, alive={health[0] == 200}, {time.monotonic() - t0:.0f} s")
    assert not bad, bad[:5]
    assert health[0] == 200 and not fivexx and tracebacks == 0
