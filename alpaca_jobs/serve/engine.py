"""The generation engine: one model, a bounded queue, watermarked sampling, streaming.

Requests are queued, not run all at once: one generation at a time on the device (a CPU or
one GPU), at most ``max_queue`` waiting; beyond that callers get ``QueueFull`` (HTTP 429)
rather than unbounded memory. Prompt formats: a model with a chat template gets it for chat
requests; Alpaca-tuned models (our training writes ``alpaca_prompt.json`` beside them) get
the Alpaca format.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import torch

from alpaca_jobs.serve.watermark import WatermarkConfig, WatermarkLogitsProcessor
from alpaca_jobs.train.template import format_prompt

ALPACA_MARKER = "alpaca_prompt.json"


class QueueFull(Exception):
    """More requests waiting than the queue holds."""


class BadRequest(ValueError):
    """A request the model cannot serve (too long, absurd max_tokens)."""


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    watermark: bool = True


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


class Engine:
    def __init__(self, model_dir: Path, watermark: WatermarkConfig | None, max_queue: int = 16,
                 max_tokens_limit: int = 1024, name: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.name = name or self.model_dir.name
        self.tok = AutoTokenizer.from_pretrained(self.model_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).to(device).eval()
        self.device = device
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self.watermark = watermark
        self.max_queue, self.max_tokens_limit = max_queue, max_tokens_limit
        marker = self.model_dir / ALPACA_MARKER
        self.alpaca = json.loads(marker.read_text()) if marker.is_file() else None
        self._lock = threading.Lock()
        self._waiting = 0
        self.created = int(time.time())

    # -- prompts ---------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if self.alpaca is None and self.tok.chat_template:
            return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        pre = self.alpaca or {}
        instruction = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "user"))
        return format_prompt(instruction, "", pre.get("preamble_with_input", ""), pre.get(
            "preamble_no_input", "Here is a task. Write a reply that carries out the task."))

    def encode(self, prompt: str, params: GenParams) -> list[int]:
        ids = self.tok.encode(prompt, add_special_tokens=not prompt.startswith(self.tok.bos_token or "\0"))
        if params.max_tokens > self.max_tokens_limit:
            raise BadRequest(f"max_tokens {params.max_tokens} is over this server's limit of {self.max_tokens_limit}")
        if len(ids) + params.max_tokens > self.context:
            raise BadRequest(f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds the "
                             f"model's context window of {self.context} tokens")
        return ids

    # -- generation --------------------------------------------------------------------------
    def _kwargs(self, ids: list[int], params: GenParams, streamer=None) -> dict:
        from transformers import LogitsProcessorList

        procs = LogitsProcessorList()
        if params.watermark and self.watermark:
            procs.append(WatermarkLogitsProcessor(self.watermark, self.vocab))
        sample = params.temperature > 0
        kw = dict(input_ids=torch.tensor([ids], device=self.device),
                  attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                  max_new_tokens=params.max_tokens, do_sample=sample, logits_processor=procs,
                  pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id,
                  streamer=streamer)
        if sample:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        return kw

    def _run(self, ids: list[int], params: GenParams, streamer=None) -> list[int]:
        with self._lock, torch.no_grad():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(**self._kwargs(ids, params, streamer))
        return out[0, len(ids):].tolist()

    def _admit(self) -> None:
        if self._waiting >= self.max_queue:
            raise QueueFull(f"{self._waiting} requests are waiting; try again shortly")
        self._waiting += 1

    def _finish(self, new_ids: list[int], params: GenParams, prompt_len: int) -> Generation:
        eos = self.tok.eos_token_id
        hit_eos = bool(new_ids) and new_ids[-1] == eos
        text = self.tok.decode(new_ids, skip_special_tokens=True)
        text, stopped = _apply_stop(text, params.stop)
        reason = "stop" if hit_eos or stopped or len(new_ids) < params.max_tokens else "length"
        return Generation(text, prompt_len, len(new_ids), reason)

    async def generate(self, ids: list[int], params: GenParams) -> Generation:
        self._admit()
        try:
            new_ids = await asyncio.to_thread(self._run, ids, params)
        finally:
            self._waiting -= 1
        return self._finish(new_ids, params, len(ids))

    async def stream(self, ids: list[int], params: GenParams) -> AsyncIterator[tuple[str, Generation | None]]:
        """Yields (text delta, None) while generating, then ("", final Generation)."""
        from transformers import TextIteratorStreamer

        self._admit()
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        result: dict = {}

        def work() -> None:
            try:
                result["ids"] = self._run(ids, params, streamer)
            except Exception as exc:  # noqa: BLE001 - reported to the client below
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        try:
            thread.start()
            sent = ""
            iterator = iter(streamer)
            while True:
                piece = await asyncio.to_thread(next, iterator, None)
                if piece is None:
                    break
                candidate, stopped = _apply_stop(sent + piece, params.stop)
                if candidate[len(sent):]:
                    yield candidate[len(sent):], None
                sent = candidate
                if stopped:
                    break
            await asyncio.to_thread(thread.join)
        finally:
            self._waiting -= 1
        if "error" in result:
            raise result["error"]
        final = self._finish(result.get("ids", []), params, len(ids))
        final.text = sent if params.stop else final.text
        yield "", final


def _apply_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
