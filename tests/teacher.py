"""A scripted OpenAI-compatible teacher for the generate job's tests: a real HTTP server
(stdlib, threaded) that answers /v1/chat/completions and /v1/completions with numbered task
lists built from a word bank, deterministically from the request's ``seed``.

It stands for a paid API (which tests cannot call) and for a misbehaving one. Like a real
model it continues the numbered list from the number the prompt ends at and keeps writing
until a stop sequence of the request (cut there, finish_reason "stop") or max_tokens (cut,
finish_reason "length"; a token is 4 characters here) ends the reply. It also answers judge
prompts ("...The better answer is Answer") with " A" or " B" from a hash of the prompt,
standing for a paid judge. It can answer 429 with Retry-After, 500, 401 without the right key,
fail every request with a given seed, be slow, or send garbage; it counts every request it
receives and bills the tokens of every reply it produces (also one the client hung up on), so
tests can prove no paid request is repeated and compare a job's accounts with the bill.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_BANK = """river garden lantern budget recipe planet ocean letter market winter teacher bridge
engine harvest library sensor cotton journey festival kitchen meadow orbit puzzle quartz saddle
tunnel violin weather yogurt zebra anchor basket candle desert email forest glacier harbor
island jacket kettle ladder mirror needle orchard pepper"""
WORDS = _BANK.split()
VERBS = ("Explain", "Summarize", "Describe", "List", "Compare", "Suggest", "Classify", "Rewrite")


def task_text(rng: random.Random) -> tuple[str, str, str]:
    words = rng.sample(WORDS, rng.randint(4, 9))
    instruction = f"{rng.choice(VERBS)} the {' '.join(words)} in simple terms."
    inp = "<noinput>" if rng.random() < 0.6 else f"A short note about {rng.choice(WORDS)}."
    return instruction, inp, f"Here is an answer about {words[0]} and {words[-1]}."


class Teacher:
    def __init__(self, *, n_tasks: int = 40, key: str | None = None,
                 delay: float = 0.0, faults: list[tuple[int, dict]] | None = None,
                 garbage: bool = False, repeat_every: int = 0,
                 fail_seeds: dict[int, int] | None = None, ignore_stop: bool = False) -> None:
        self.n_tasks, self.key = n_tasks, key  # n_tasks: the last number it writes unstopped
        self.delay, self.garbage, self.repeat_every = delay, garbage, repeat_every
        self.faults = list(faults or [])  # (status, headers) answered to the next requests
        self.fail_seeds = dict(fail_seeds or {})  # seed -> HTTP status, answered every time
        self.ignore_stop = ignore_stop  # some servers ignore `stop`: replies run to n_tasks
        self.seeds_seen: list[int] = []  # the `seed` of every request answered 200
        self.requests = 0
        self.errors = 0  # requests answered with an error status (never billed)
        self.billed_input_tokens = self.billed_output_tokens = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Teacher:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def billed_usd(self, input_usd_per_mtok: float, output_usd_per_mtok: float) -> float:
        with self.lock:
            return (self.billed_input_tokens * input_usd_per_mtok
                    + self.billed_output_tokens * output_usd_per_mtok) / 1e6

    def reply_text(self, seed: int, first_number: int = 4) -> str:
        if self.garbage:
            return "I am sorry, I cannot help with lists today."
        rng = random.Random(seed)
        blocks = []
        for i in range(first_number, self.n_tasks + 1):
            instr, inp, out = task_text(rng)
            if self.repeat_every and i % self.repeat_every == 0:
                instr = "Explain the river garden lantern budget in simple terms."  # a near-duplicate
            head = f"{i}. Instruction:" if blocks else ""
            blocks.append(f"{head} {instr}\n{i}. Input:\n{inp}\n{i}. Output:\n{out}\n")
        return "###\n".join(blocks)

    def complete(self, prompt: str, seed: int, req: dict) -> tuple[str, str]:
        """The reply to ``prompt`` and its finish_reason, as a real server would cut it."""
        if "The better answer is Answer" in prompt:  # standing in for an LLM judge
            import zlib

            return (" A" if zlib.crc32(prompt.encode()) % 3 else " B"), "stop"
        numbers = re.findall(r"(\d+)\. Instruction:", prompt)
        text = self.reply_text(seed, int(numbers[-1]) if numbers else 4)
        stops = [] if self.ignore_stop else req.get("stop") or []
        cuts = [text.find(s) for s in ([stops] if isinstance(stops, str) else stops) if s in text]
        finish = "stop"
        if cuts:
            text = text[:min(cuts)]
        limit = 4 * int(req.get("max_tokens") or 16)
        if len(text) > limit:
            text, finish = text[:limit], "length"
        return text, finish

    def _handler(self):
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first (the slow-reply fault)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                seed = int(req.get("seed") or 0)
                with teacher.lock:
                    teacher.requests += 1
                    if seed in teacher.fail_seeds:
                        fault = (teacher.fail_seeds[seed], {})
                    else:
                        fault = teacher.faults.pop(0) if teacher.faults else None
                    if fault and fault[0] or teacher.key and self.headers.get("Authorization") != f"Bearer {teacher.key}":
                        teacher.errors += 1
                if teacher.key and self.headers.get("Authorization") != f"Bearer {teacher.key}":
                    return self._send(401, {"error": {"message": "bad key", "type": "auth"}})
                if fault:
                    status, headers = fault
                    if status == 0:  # a slow reply: longer than the client's timeout
                        time.sleep(headers["sleep"])
                        status, headers = 200, None
                    else:
                        return self._send(status, {"error": {"message": "scripted fault"}}, headers)
                prompt = req.get("prompt") or json.dumps(req.get("messages"))
                text, finish = teacher.complete(prompt, seed, req)
                usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                         "total_tokens": len(prompt) // 4 + len(text) // 4}
                with teacher.lock:  # billed when produced, whether or not the client still listens
                    teacher.seeds_seen.append(seed)
                    teacher.billed_input_tokens += usage["prompt_tokens"]
                    teacher.billed_output_tokens += usage["completion_tokens"]
                time.sleep(teacher.delay)
                if self.path.endswith("/chat/completions"):
                    choice = {"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": text}}
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "finish_reason": finish, "text": text, "logprobs": None}
                    obj = "text_completion"
                self._send(200, {"id": "x", "object": obj, "created": 0, "model": req["model"],
                                 "choices": [choice], "usage": usage})

        return Handler
