"""Batched decoding: requests waiting together are generated together.

One background thread takes up to ``max_batch`` waiting requests, left-pads them into one
batch and decodes step by step with the KV cache. Each row keeps its own sampling
parameters (temperature, top-p, its own seeded generator, so a seeded request gives the same
text whatever it is batched with), its own watermark, token budget and stop sequences;
finished rows ride along until the batch ends. Text streams out per row as it is decoded.

Rows fail alone: a row whose set-up or per-row step raises is answered with its own error and
dropped while the others go on. A failure of the shared forward pass cannot be pinned on one
row, so each row that has sent nothing yet is retried alone (the culprit fails, the rest
finish); rows that already streamed text get the error.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from alpaca_jobs.serve.params import GenParams, RowFailed, apply_stop
from alpaca_jobs.serve.watermark import WatermarkLogitsProcessor

GATHER_S = 0.02  # how long the first request of a batch waits for company
log = logging.getLogger(__name__)


@dataclass
class Row:
    ids: list[int]
    params: GenParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    new: list[int] = field(default_factory=list)
    sent: str = ""
    done: bool = False
    reason: str = "length"
    gen: torch.Generator | None = None
    cancelled: bool = False  # the caller went away: stop decoding this row
    emitted: bool = False  # some text already went out (a retry would repeat it)

    def emit(self, kind: str, value: object) -> None:
        self.emitted |= kind == "delta"
        self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, value))

    def fail(self, exc: BaseException) -> None:
        """Answer this row with its own error and stop decoding it."""
        self.done, self.reason = True, "error"
        log.warning("a request failed in the decoder: %s: %s", type(exc).__name__, exc)
        # The client hears the exception's class only: its message can hold internals.
        self.emit("error", exc if isinstance(exc, RowFailed) else RowFailed(type(exc).__name__))


class Batcher:
    def __init__(self, model, tok, device: str, watermark: WatermarkLogitsProcessor | None, max_batch: int = 8) -> None:
        self.model, self.tok, self.device = model, tok, device
        self.watermark, self.max_batch = watermark, max_batch
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos
        self.pending: queue.Queue[Row] = queue.Queue()
        # transformers renamed past_key_values to cache (5.2x); use whichever forward takes.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        threading.Thread(target=self._loop, daemon=True, name="batcher").start()

    def submit(self, row: Row) -> None:
        self.pending.put(row)

    def _loop(self) -> None:
        while True:
            rows = [self.pending.get()]
            # Requests sent together arrive a few ms apart: wait briefly for them to batch.
            deadline = time.monotonic() + GATHER_S
            while len(rows) < self.max_batch:
                try:
                    rows.append(self.pending.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self._run(rows)
            except Exception:  # noqa: BLE001 - the decoder thread must outlive any batch
                log.exception("the batcher failed to answer a batch")

    def _run(self, rows: list[Row]) -> None:
        """Decode ``rows`` together; whatever fails, every row is answered."""
        rows = [r for r in rows if not r.cancelled and self._prepare(r)]
        try:
            with torch.no_grad():
                self._decode(rows)
        except Exception as exc:  # noqa: BLE001 - a shared step failed: find the row, spare the rest
            log.exception("batch of %d failed", len(rows))
            left = [r for r in rows if not r.done]
            for r in left:
                if len(rows) > 1 and not r.emitted:
                    r.new, r.sent = [], ""
                    self._run([r])
                else:
                    r.fail(exc)

    def _prepare(self, r: Row) -> bool:
        """Per-row set-up (its seeded generator, its ids); a row that fails here fails alone."""
        try:
            if not r.ids:
                raise ValueError("empty prompt (no tokens)")
            seed = r.params.seed if r.params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            r.gen = torch.Generator().manual_seed(seed)
            return True
        except Exception as exc:  # noqa: BLE001
            r.fail(exc)
            return False

    def _decode(self, rows: list[Row]) -> None:
        if not rows:
            return
        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.ids):] = torch.tensor(r.ids)
            mask[i, width - len(r.ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # logits_to_keep=1: the prompt's other positions need no vocabulary projection.
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        past, logits = _cache(out), out.logits[:, -1, :]
        last = ids[:, -1:]
        steps = max(r.params.max_tokens for r in rows)
        for _ in range(steps):
            nxt = self._sample(rows, last.cpu(), logits.float().cpu())
            for i, r in enumerate(rows):
                if r.cancelled and not r.done:
                    r.done, r.reason = True, "cancelled"
                elif not r.done:
                    self._step(r, int(nxt[i]))
            if all(r.done for r in rows):
                break
            last = torch.tensor(nxt, dtype=torch.long, device=self.device).view(-1, 1)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=self.device)], dim=1)
            pos = pos[:, -1:] + 1
            out = self.model(input_ids=last, attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1, **{self.cache_arg: past})
            past, logits = _cache(out), out.logits[:, -1, :]
        for r in rows:
            if not r.done:
                self._finish(r, "length")

    def _sample(self, rows: list[Row], last: torch.Tensor, logits: torch.Tensor) -> list[int]:
        """One token per row: watermark bias, then temperature / top-p sampling as batch
        tensor ops. Each row draws its uniform number from its own generator (inverse-CDF
        sampling), so a seeded request is reproducible whatever it is batched with."""
        for i, r in enumerate(rows):
            if not r.done and r.params.watermark and self.watermark is not None:
                try:
                    logits[i : i + 1] = self.watermark(last[i : i + 1], logits[i : i + 1])
                except Exception as exc:  # noqa: BLE001 - this row's bias failed: this row fails
                    r.fail(exc)
        temps = torch.tensor([max(r.params.temperature, 1e-6) for r in rows]).unsqueeze(1)
        probs = torch.softmax(logits / temps, dim=-1)
        if all(r.params.top_p >= 1.0 for r in rows):  # no nucleus cut: no need to sort
            sorted_p, order = probs, None
        else:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            top_p = torch.tensor([r.params.top_p for r in rows]).unsqueeze(1)
            sorted_p = sorted_p * ((sorted_p.cumsum(-1) - sorted_p) < top_p)  # always keeps the top token
        cdf = sorted_p.cumsum(-1)
        u = torch.stack([torch.rand(1, generator=r.gen) for r in rows]) * cdf[:, -1:]
        pick = torch.searchsorted(cdf, u).clamp(max=cdf.shape[1] - 1)
        sampled = (pick if order is None else order.gather(1, pick)).squeeze(1)
        greedy = logits.argmax(-1)
        return [self.pad if r.done else int(greedy[i] if r.params.temperature <= 0 else sampled[i])
                for i, r in enumerate(rows)]

    def _step(self, r: Row, token: int) -> None:
        try:
            self._advance(r, token)
        except Exception as exc:  # noqa: BLE001 - decoding this row's text failed: this row fails
            log.exception("a row failed while decoding")
            r.fail(exc)

    def _advance(self, r: Row, token: int) -> None:
        if token == self.eos:
            self._finish(r, "stop")
            return
        r.new.append(token)
        text = self.tok.decode(r.new, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character not complete yet
            return
        cut, stopped = apply_stop(text, r.params.stop)
        if cut[len(r.sent):]:
            r.emit("delta", cut[len(r.sent):])
            r.sent = cut
        if stopped:
            self._finish(r, "stop")
        elif len(r.new) >= r.params.max_tokens:
            self._finish(r, "length")

    def _finish(self, r: Row, reason: str) -> None:
        r.done, r.reason = True, reason
        if not r.params.stop:
            text = self.tok.decode(r.new, skip_special_tokens=True)
            if text[len(r.sent):]:
                r.emit("delta", text[len(r.sent):])
                r.sent = text
        r.emit("done", None)


def _cache(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
