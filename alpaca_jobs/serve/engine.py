"""The generation engine: one model, a bounded queue, watermarked sampling, streaming.

Requests wait in a bounded queue and are decoded in batches of up to ``max_batch``
(``batcher.py``); with ``max_queue`` requests queued or running, more get ``QueueFull``
(HTTP 429) rather than unbounded memory. Prompt formats: a model with a chat template gets it for chat
requests (a model we trained has the Alpaca prompt as its template; a request's ``input``
fills its with-input section); older directories with ``alpaca_prompt.json`` get that format.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import torch

from alpaca_jobs.common.template import format_prompt
from alpaca_jobs.serve.batcher import Batcher, Row
from alpaca_jobs.serve.params import BadRequest, Generation, GenParams, QueueFull
from alpaca_jobs.serve.watermark import WatermarkConfig, WatermarkLogitsProcessor

ALPACA_MARKER = "alpaca_prompt.json"
__all__ = ["BadRequest", "Engine", "GenParams", "Generation", "QueueFull"]


class Engine:
    def __init__(self, model_dir: Path, watermark: WatermarkConfig | None, max_queue: int = 16,
                 max_tokens_limit: int = 1024, name: str | None = None, max_batch: int = 8) -> None:
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
        self._waiting = 0
        self.created = int(time.time())
        proc = WatermarkLogitsProcessor(watermark, self.vocab) if watermark else None
        self.batcher = Batcher(self.model, self.tok, device, proc, max_batch=max_batch)

    @property
    def waiting(self) -> int:
        """Requests queued or being decoded now."""
        return self._waiting

    # -- prompts ---------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, str]], input_text: str = "") -> str:
        """The model's own chat template (ours is the Alpaca prompt it was trained on, taking
        ``input`` as the with-input section); else the Alpaca format for model directories from
        before templates (``alpaca_prompt.json``) or without a template."""
        if self.tok.chat_template:
            return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                input=input_text)
        from alpaca_jobs.common.template import PromptFormat

        pre = {**PromptFormat().model_dump(), **(self.alpaca or {})}
        instruction = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "user"))
        return format_prompt(instruction, input_text, pre["preamble_with_input"], pre["preamble_no_input"])

    def encode(self, prompt: str, params: GenParams) -> list[int]:
        ids = self.tok.encode(prompt, add_special_tokens=not prompt.startswith(self.tok.bos_token or "\0"))
        if not ids:  # an empty prompt: start from the beginning-of-text token, as GPT-2 did
            start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
            ids = [start]
        if params.max_tokens > self.max_tokens_limit:
            raise BadRequest(f"max_tokens {params.max_tokens} is over this server's limit of {self.max_tokens_limit}")
        if len(ids) + params.max_tokens > self.context:
            raise BadRequest(f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds the "
                             f"model's context window of {self.context} tokens")
        return ids

    # -- generation --------------------------------------------------------------------------
    def _admit(self, ids: list[int], params: GenParams) -> Row:
        if self._waiting >= self.max_queue:
            raise QueueFull(f"{self._waiting} requests are queued or running; try again shortly")
        self._waiting += 1
        row = Row(ids, params, asyncio.get_running_loop(), asyncio.Queue())
        self.batcher.submit(row)
        return row

    def _result(self, row: Row) -> Generation:
        return Generation(row.sent, len(row.ids), len(row.new), row.reason)

    async def generate(self, ids: list[int], params: GenParams) -> Generation:
        """The whole generation: the stream, consumed (its last item carries the result)."""
        result = None
        async for _, final in self.stream(ids, params):
            result = final
        return result

    async def stream(self, ids: list[int], params: GenParams) -> AsyncIterator[tuple[str, Generation | None]]:
        """Yields (text delta, None) while generating, then ("", final Generation)."""
        row = self._admit(ids, params)
        try:
            while True:
                kind, value = await row.out.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    break
                yield value, None
        finally:
            self._waiting -= 1
            if not row.done:  # the consumer left (disconnect, cancel): free the decoder
                row.cancelled = True
        yield "", self._result(row)

