"""Crash safety: SIGKILL the real server mid-stream, with generations in flight and flags being
written; after a restart on the same database no acknowledged flag is lost, none is
half-written, and the export is valid JSON."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import threading
import urllib.parse

import pytest

from tests.conftest import cli
from tests.test_serve import server_process
from tests.test_serve_hardening import ENV, call

pytestmark = pytest.mark.integration
WRITERS = 4


def _stream(base: str, model: str, started: threading.Event) -> None:
    """A long streamed completion, read until the server dies under it."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": 900, "stream": True}
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        while resp.read1(256):
            started.set()
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()


def _write_flags(base: str, worker: int, acked: list, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        reason = f"w{worker}-n{i}"
        try:
            status, raw = call(base, "POST", "/v1/flags", {"prompt": "p" * 2000, "output": "o" * 2000,
                                                           "reason": reason, "params": {"i": i, "t": 0.5}})
        except (OSError, http.client.HTTPException):  # the server is gone: this write was never acknowledged
            return
        if status == 200:
            acked.append((json.loads(raw)["id"], reason))
        i += 1


def test_sigkill_mid_stream_loses_no_acknowledged_flag(tmp_path, tiny_dir):
    acked: list[tuple[int, str]] = []
    stop, streaming = threading.Event(), threading.Event()
    with server_process(tmp_path, ENV, "--model", str(tiny_dir), "--set", "serve.max_queue=32") as (base, proc):
        model = json.loads(call(base, "GET", "/readyz")[1])["model"]
        threads = [threading.Thread(target=_stream, args=(base, model, streaming)) for _ in range(3)]
        threads += [threading.Thread(target=_write_flags, args=(base, w, acked, stop)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        assert streaming.wait(120), "no stream started"
        while len(acked) < 40:  # flags are being written now, streams in flight
            threading.Event().wait(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        stop.set()
        for t in threads:
            t.join(60)
    assert proc.returncode == -signal.SIGKILL

    db = tmp_path / "flags.sqlite3"
    with server_process(tmp_path, ENV, "--model", str(tiny_dir)) as (base, _):
        status, raw = call(base, "POST", "/v1/flags", {"prompt": "p", "output": "o", "reason": "after"})
        assert status == 200 and json.loads(raw)["id"] > max(i for i, _ in acked)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    out = cli("flags", "export", "--flags-db", str(db))
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in (json.loads(x, parse_constant=pytest.fail) for x in out.stdout.splitlines())}
    for fid, reason in acked:  # every acknowledged flag, whole
        row = rows[fid]
        assert row["reason"] == reason and row["prompt"] == "p" * 2000 and row["output"] == "o" * 2000
        assert row["params"]["t"] == 0.5 and row["model"] == model and row["created_at"]
    assert all(r["params"] is not None and r["output"] for r in rows.values())
