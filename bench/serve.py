"""Serving throughput: aggregate completion tokens/s with 1 and 8 concurrent clients on the
default model (SmolLM2-135M-Instruct), and the watermark's overhead, measured in one run
against one server through the real `openai` client.

    python bench/serve.py [--requests 3] [--max-tokens 64]

Targets (issue #5): 8 clients >= 3x the single-client throughput; watermark overhead <= 10%.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Give three tips for staying healthy.", "Explain what a compiler does.",
           "Write a short poem about the sea.", "Describe how rain forms.",
           "List five uses for a paperclip.", "Summarise the plot of a heist film.",
           "Explain why the sky is blue.", "Suggest a name for a bakery."]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(client, clients: int, requests: int, max_tokens: int, watermark: bool) -> float:
    """Aggregate completion tokens per second with ``clients`` concurrent callers."""
    def one(i: int) -> int:
        total = 0
        for j in range(requests):
            r = client.chat.completions.create(
                model=client.model_name, max_tokens=max_tokens, temperature=0.8, seed=i * 100 + j,
                messages=[{"role": "user", "content": PROMPTS[(i + j) % len(PROMPTS)]}],
                extra_body={"watermark": watermark})
            total += r.usage.completion_tokens
        return total
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(one, range(clients)))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    import openai

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "alpaca_jobs", "serve", "--port", str(port),
                               "--allow-unwatermarked", "--max-queue", "64", "--flags-db", "/tmp/bench-flags.db"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "ALPACA_JOBS_API_KEYS": ""})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        client.model_name = client.models.list().data[0].id
        run(client, 1, 1, 8, True)  # warm-up
        one_wm = run(client, 1, args.requests, args.max_tokens, True)
        eight_wm = run(client, 8, args.requests, args.max_tokens, True)
        eight_plain = run(client, 8, args.requests, args.max_tokens, False)
        one_plain = run(client, 1, args.requests, args.max_tokens, False)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"model {client.model_name}, {args.requests} requests per client, max_tokens {args.max_tokens}, "
          f"{os.cpu_count()} CPUs")
    print(f"1 client:   {one_wm:7.1f} tok/s watermarked, {one_plain:7.1f} plain")
    print(f"8 clients:  {eight_wm:7.1f} tok/s watermarked, {eight_plain:7.1f} plain")
    print(f"scaling 8 vs 1 clients (watermarked): {eight_wm / one_wm:.2f}x   (target >= 3x)")
    print(f"watermark overhead: {1 - eight_wm / eight_plain:+.1%} at 8 clients, "
          f"{1 - one_wm / one_plain:+.1%} at 1 client   (target <= 10%)")


if __name__ == "__main__":
    main()
