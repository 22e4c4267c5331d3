"""Both systems' outputs for every item, fetched concurrently through ``alpaca_jobs.api.Client``.

A system is an OpenAI-compatible endpoint, or a model directory that this job serves itself for
the duration: ``python -m alpaca_jobs serve`` in a subprocess on a free local port, with a fresh
API key and a fresh watermark key (outputs are judged as users would get them: watermarked).
Two systems naming the same directory share one server. Served models take turns (``phases``):
one model in memory at a time, and the CPUs or the GPU are not split between two servers.
The server stops with the job: at the end, on a cancel (SIGTERM), and if the job is killed.

Both systems get the same sampling seed for the same item (common random numbers: the
comparison is of the models, not of their luck with the sampler).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alpaca_jobs.common.endpoint import Endpoint
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.evaluate.config import System
from alpaca_jobs.evaluate.instructions import Item
from alpaca_jobs.evaluate.store import Appender, read_jsonl

log = logging.getLogger(__name__)
DEFAULT_MODEL = "preset:smollm2-135m-instruct"  # the serve job's own default
READY_TIMEOUT_S = 600.0
# Model directories: the usual sampling for instruction following; a local server is never
# rate-limited, so a slow answer (a CPU) is waited for rather than retried.
SERVED = {"temperature": 0.7, "top_p": 0.9, "timeout_seconds": 1800, "max_attempts": 2, "in_flight": 4}


def output_key(item_id: str, system: str) -> tuple[str, str]:
    return (item_id, system)


def read_outputs(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {output_key(r["item"], r["system"]): r for r in read_jsonl(path)}


def missing(items: list[Item], system: str, done: dict[tuple[str, str], Any]) -> list[Item]:
    return [it for it in items if output_key(it.id, system) not in done]


def phases(systems: list[System]) -> list[list[System]]:
    """Groups to collect one after another: each holds at most one served model (and the
    systems that use it); systems behind endpoints go with the first group."""
    remote = [s for s in systems if s.endpoint is not None]
    by_model: dict[str, list[System]] = {}
    for s in systems:
        if s.endpoint is None:
            by_model.setdefault(s.model_dir or DEFAULT_MODEL, []).append(s)
    groups = list(by_model.values()) or [[]]
    groups[0] = remote + groups[0]
    return groups


@contextlib.contextmanager
def endpoints(systems: list[System], max_new_tokens: int, log_dir: Path) -> Iterator[dict[str, Endpoint]]:
    """An endpoint per system; model directories are served until the block ends."""
    with contextlib.ExitStack() as stack:
        served: dict[str, Endpoint] = {}
        out: dict[str, Endpoint] = {}
        for system in systems:
            if system.endpoint is not None:
                out[system.name] = system.endpoint
                continue
            model = system.model_dir or DEFAULT_MODEL
            if model not in served:
                served[model] = stack.enter_context(serve_model(model, max_new_tokens, log_dir))
            out[system.name] = served[model]
        yield out


@contextlib.contextmanager
def serve_model(model: str, max_new_tokens: int, log_dir: Path) -> Iterator[Endpoint]:
    """Serve ``model`` on 127.0.0.1 (a free port) until the block ends; yields its Endpoint."""
    port = _free_port()
    key = secrets.token_urlsafe(24)
    key_env = f"ALPACA_JOBS_EVAL_SERVED_KEY_{port}"  # the Client reads keys from the environment
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "alpaca_jobs", "serve", "--set", "serve.host=127.0.0.1",
            "--set", f"serve.port={port}", "--set", f"serve.flags_db={log_dir / f'served-{port}-flags.sqlite3'}"]
    if model != DEFAULT_MODEL:
        args += ["--set", f"serve.model={model}"]
    env = {**os.environ, "ALPACA_JOBS_API_KEYS": key, "ALPACA_JOBS_WATERMARK_KEY": secrets.token_hex(16)}
    log_path = log_dir / f"served-{port}.log"
    log.info("serving %s on 127.0.0.1:%d for this evaluation (log: %s)", model, port, log_path)
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_parent_death_signal())
    os.environ[key_env] = key
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base, log_path)
        name = _served_name(base, key)
        yield Endpoint(base_url=base + "/v1", model=name, api_key_env=key_env,
                       max_tokens=max_new_tokens, **SERVED)
    finally:
        os.environ.pop(key_env, None)
        proc.terminate()
        try:
            proc.wait(timeout=10)  # a server still generating for us is not worth waiting for
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def collect(items: list[Item], clients: dict[str, Any], path: Path, max_new_tokens: int,
            seed: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Fetch every missing (item, system) output; each is on disk before the next is counted.
    Each system runs ``in_flight`` requests at a time, all given systems at once."""
    done = read_outputs(path)
    seeds = {it.id: seed + i for i, it in enumerate(items)}
    pools = {name: cf.ThreadPoolExecutor(c.cfg["in_flight"], thread_name_prefix=f"collect-{name}")
             for name, c in clients.items()}
    with Appender(path) as out:
        try:
            futures = [pools[name].submit(_one, client, name, it, max_new_tokens, seeds[it.id], out)
                       for name, client in clients.items() for it in missing(items, name, done)]
            for fut in cf.as_completed(futures):
                record = fut.result()  # the first failure stops the rest (what is done stays)
                done[output_key(record["item"], record["system"])] = record
        except BaseException as exc:
            stop_pools(pools.values(), exc)
            raise
        stop_pools(pools.values())
    return done


def stop_pools(pools, exc: BaseException | None = None) -> None:
    """Normally, or after a failed request: let running requests finish and be written (they
    are paid for). On a cancel (SIGTERM, Ctrl-C): do not wait for them; they are redone next time."""
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
    for pool in pools:
        pool.shutdown(wait=not interrupted, cancel_futures=True)


def _one(client, system: str, item: Item, max_new_tokens: int, seed: int, out: Appender) -> dict:
    reply = client.complete(item.prompt, max_tokens=max_new_tokens, seed=seed)
    record = {"item": item.id, "system": system, "output": reply.text.strip(),
              "finish_reason": reply.finish_reason, "input_tokens": reply.input_tokens,
              "output_tokens": reply.output_tokens, "attempts": reply.attempts,
              "seconds": round(reply.seconds, 3)}
    out.add(record)
    return record


def _parent_death_signal():
    """A function for the child to run before exec: on Linux, SIGKILL the server when the thread
    that started it dies (the job's main thread), however it dies: an orphaned server would go
    on generating for clients that are gone. Looked up here, in the parent: the child of a
    threaded process must not import anything."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    end = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise UserError(f"the model server for this evaluation exited ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise UserError(f"the model server was not ready after {READY_TIMEOUT_S:.0f} s; see {log_path}")


def _served_name(base: str, key: str) -> str:
    req = urllib.request.Request(base + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["data"][0]["id"]
