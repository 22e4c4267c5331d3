"""Hostile input against the serve job: a real server (the tiny-llama preset) over loopback HTTP.
Every error, from any layer, is OpenAI-shaped and < 500; one bad row never fails its batch."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import http.client
import json
import threading
import time
import urllib.parse

import pytest

from tests.conftest import cli
from tests.test_serve import _free_port, running_server

pytestmark = pytest.mark.integration
ENV = {"ALPACA_JOBS_API_KEYS": "", "ALPACA_JOBS_WATERMARK_KEY": "hardening-key"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("hardening")
    with running_server(tmp, ENV, "--model", str(tiny_dir), "--set", "serve.max_queue=32") as base:
        model = json.loads(call(base, "GET", "/readyz")[1])["model"]
        yield {"base": base, "tmp": tmp, "model": model}


def call(base: str, method: str, path: str, body: bytes | dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One raw HTTP request (no client library to tidy up what we send)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def assert_openai_error(status: int, raw: bytes, expect: int) -> dict:
    assert status == expect, (status, raw[:300])
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return err


def metrics(base: str) -> str:
    return call(base, "GET", "/metrics")[1].decode()


def comp(model: str, **kw) -> dict:
    return {"model": model, "prompt": "Name a fruit.", "max_tokens": 4, **kw}


@pytest.mark.parametrize("field,value,needle", [
    ("seed", 2**63, "seed"), ("seed", -1, "seed"), ("max_tokens", True, "max_tokens"),
    ("max_tokens", 3.0, "max_tokens"), ("temperature", "hot", "temperature"), ("n", 2, "n"),
    ("top_p", 0, "top_p"), ("stop", ["a", "b", "c", "d", "e"], "stop"), ("stop", "x" * 300, "stop"),
    ("stream", 1, "stream"), ("prompt", 5, "prompt"), ("prompt", "x" * 200_001, "prompt"),
])
def test_out_of_range_and_wrong_types_are_400_naming_the_field(srv, field, value, needle):
    err = assert_openai_error(*call(srv["base"], "POST", "/v1/completions", comp(srv["model"], **{field: value})), 400)
    assert err["param"] == needle and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [
    b'{"model": "m", "prompt": "hi", "stop": "\\ud800"}',          # lone surrogate
    b'{"model": "m", "prompt": "\\udfff x"}',
    b'{"model": "m", "prompt": "hi", "temperature": NaN}',        # not JSON, though Python reads it
    b'{"model": "m", "prompt": "hi", "top_p": Infinity}',
    b'\xff\xfe{"model": 1}',                                       # not UTF-8
    b'{"model": "m", "prompt": ',                                  # truncated
    b"[" * 100_000 + b"]" * 100_000,                               # nested 100k deep
    b'{"a":' * 50 + b"1" + b"}" * 50,
    b"",
])
def test_hostile_bodies_are_openai_shaped_400s(srv, raw):
    assert_openai_error(*call(srv["base"], "POST", "/v1/completions", raw), 400)


def test_404_405_and_413_are_openai_shaped_and_counted(srv):
    base = srv["base"]
    assert assert_openai_error(*call(base, "GET", "/v1/nowhere/at/all"), 404)["code"] == "not_found"
    assert assert_openai_error(*call(base, "GET", "/v1/completions"), 405)["code"] == "method_not_allowed"
    big = b'{"prompt": "' + b"x" * 2_000_000 + b'"}'
    assert assert_openai_error(*call(base, "POST", "/v1/completions", big), 413)["code"] == "request_too_large"
    m = metrics(base)
    assert 'alpaca_serve_requests_total{endpoint="other",status="404"}' in m
    assert 'alpaca_serve_requests_total{endpoint="/v1/completions",status="405"}' in m
    assert 'alpaca_serve_requests_total{endpoint="/v1/completions",status="413"}' in m
    assert "/v1/nowhere" not in m  # made-up paths do not become metric labels


def test_a_body_over_the_limit_is_refused_while_reading_without_content_length(srv):
    """Chunked upload, no Content-Length: refused once the limit is passed, not after the rest."""
    url = urllib.parse.urlsplit(srv["base"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    chunks = (b"x" * 65536 for _ in range(10_000))  # 655 MB if it were all read
    conn.request("POST", "/v1/completions", body=chunks, encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    assert_openai_error(resp.status, resp.read(), 413)
    conn.close()


def test_a_poisoned_request_does_not_fail_the_innocent_ones_sent_with_it(srv):
    base, model = srv["base"], srv["model"]
    bodies = [comp(model, seed=2**63), comp(model, prompt=""), comp(model, seed=2**70, stream=True)]
    bodies += [comp(model, seed=i, max_tokens=8) for i in range(5)]
    with cf.ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(lambda b: call(base, "POST", "/v1/completions", b), bodies))
    assert_openai_error(*results[0], 400)
    assert results[1][0] == 200 and json.loads(results[1][1])["choices"][0]["finish_reason"]  # empty prompt
    assert_openai_error(*results[2], 400)  # refused before any stream headers
    for status, raw in results[3:]:
        assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] >= 1


def test_moderation_inputs_are_capped(srv):
    base = srv["base"]
    assert_openai_error(*call(base, "POST", "/v1/moderations", {"input": ["hi"] * 100_000}), 400)
    assert_openai_error(*call(base, "POST", "/v1/moderations", {"input": ["hi"] * 65}), 400)
    assert_openai_error(*call(base, "POST", "/v1/moderations", {"input": "x" * 40_000}), 400)
    status, raw = call(base, "POST", "/v1/moderations", {"input": ["hi"] * 64})
    assert status == 200 and len(json.loads(raw)["results"]) == 64


def test_flag_params_are_bounded_finite_json_and_the_export_stays_valid(srv):
    base = srv["base"]
    flag = {"prompt": "p", "output": "o", "reason": "r"}
    for raw in (b'{"prompt":"p","output":"o","reason":"r","params":{"t":NaN}}',
                b'{"prompt":"p","output":"o","reason":"r","params":{"t":[1,-Infinity]}}'):
        assert "NaN and infinity" in assert_openai_error(*call(base, "POST", "/v1/flags", raw), 400)["message"]
    assert_openai_error(*call(base, "POST", "/v1/flags", flag | {"params": {"x": "y" * 5000}}), 400)
    assert_openai_error(*call(base, "POST", "/v1/flags", flag | {"params": [1, 2]}), 400)
    status, raw = call(base, "POST", "/v1/flags", flag | {"params": {"temperature": 0.5, "note": "ok"}})
    assert status == 200 and json.loads(raw)["stored"] is True
    out = cli("flags", "export", "--flags-db", str(srv["tmp"] / "flags.sqlite3")).stdout
    rows = [json.loads(line, parse_constant=pytest.fail) for line in out.splitlines()]
    assert rows and rows[-1]["params"] == {"temperature": 0.5, "note": "ok"}


def test_a_body_that_is_not_declared_json_is_a_400(srv):
    raw = json.dumps(comp(srv["model"])).encode()
    assert_openai_error(*call(srv["base"], "POST", "/v1/completions", raw, {"Content-Type": "text/plain"}), 400)


def test_the_openapi_schema_documents_the_models(srv):
    schema = json.loads(call(srv["base"], "GET", "/openapi.json")[1])
    names = set(schema["components"]["schemas"])
    assert {"CompletionRequest", "CompletionResponse", "ChatCompletionResponse", "ErrorResponse"} <= names
    # Integer bounds exact, as pydantic states them (FastAPI's models made them floats: 2**63).
    seed = next(x for x in schema["components"]["schemas"]["CompletionRequest"]["properties"]["seed"]["anyOf"]
                if x.get("type") == "integer")
    assert (seed["minimum"], seed["maximum"]) == (0, 2**63 - 1)
    assert type(seed["maximum"]) is int and type(seed["minimum"]) is int


# -- the batcher and the stream, in process, on the real tiny model ------------------------------
@pytest.fixture(scope="module")
def engine(tiny_dir):
    from alpaca_jobs.serve.engine import Engine
    from alpaca_jobs.serve.watermark import WatermarkConfig

    return Engine(tiny_dir, WatermarkConfig(key="k"), max_queue=32, name="tiny")


def test_batcher_answers_a_failing_row_alone_and_finishes_the_others(engine):
    """Rows decoded in one batch: one whose set-up fails (a seed torch refuses) and one that
    breaks the shared forward pass (a token id past the vocabulary). Each gets its own error;
    the innocent rows give exactly what they give alone."""
    from alpaca_jobs.serve.params import GenParams, RowFailed

    ok = [GenParams(max_tokens=6, seed=i, temperature=0.8) for i in range(4)]
    ids = engine.encode("Name a fruit.", ok[0])

    async def run_all(rows):
        return await asyncio.gather(*(engine.generate(i, p) for i, p in rows), return_exceptions=True)

    alone = [asyncio.run(run_all([(ids, p)]))[0].text for p in ok]
    mixed = [(ids, GenParams(max_tokens=6, seed=2**64)), ([engine.vocab + 7], GenParams(max_tokens=6))]
    out = asyncio.run(run_all(mixed + [(ids, p) for p in ok]))
    assert isinstance(out[0], RowFailed) and isinstance(out[1], RowFailed), out[:2]
    assert [g.text for g in out[2:]] == alone
    assert engine.waiting == 0  # every slot given back


def test_a_stream_that_fails_after_its_headers_ends_with_an_error_event_then_done(engine, tmp_path):
    from alpaca_jobs.serve.flags import FlagStore
    from alpaca_jobs.serve.params import GenParams
    from alpaca_jobs.serve.serving import Metrics, OpenAIServing

    serving = OpenAIServing(engine, FlagStore(tmp_path / "flags.sqlite3"), Metrics())

    async def collect():
        good = [e async for e in serving._sse("chat", "tiny", engine.stream([5, 6], GenParams(max_tokens=3)))]
        bad = [e async for e in serving._sse("chat", "tiny", engine.stream([engine.vocab + 1], GenParams()))]
        return good, bad

    good, bad = asyncio.run(collect())
    assert good[-1] == "data: [DONE]\n\n" and all('"error"' not in e for e in good)
    assert bad[-1] == "data: [DONE]\n\n" and len(bad) == 2
    err = json.loads(bad[0].removeprefix("data: "))["error"]
    assert err["type"] == "server_error" and "generation failed" in err["message"]


def test_exceptions_escaping_a_handler_are_openai_shaped_500s_and_counted(engine, tmp_path):
    """The real app (engine in process) on a real uvicorn server, with one route that raises."""
    import uvicorn

    from alpaca_jobs.serve.app import ServeState, create_app
    from alpaca_jobs.serve.flags import FlagStore

    def boom() -> None:
        raise RuntimeError("secret internals")

    app = create_app(ServeState(engine, FlagStore(tmp_path / "flags.sqlite3")))
    app.add_api_route("/v1/boom", boom)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        err = assert_openai_error(*call(base, "GET", "/v1/boom"), 500)
        assert err["type"] == "server_error" and "secret internals" not in err["message"]
        assert 'alpaca_serve_requests_total{endpoint="other",status="500"} 1.0' in metrics(base)
    finally:
        server.should_exit = True
        thread.join(10)
