"""The generation loop: concurrent requests, replies logged then parsed in arrival order,
text filters, the ROUGE-L pool, a hard API budget, and outputs a person can open.

Files in the run directory:
  raw.jsonl           every reply, as received (the job's memory; see rawlog.py)
  spend.jsonl         every attempt's worst-case cost, journalled before it is sent (ledger.py)
  alpaca_data.json    kept tasks as [{instruction, input, output}]: the training job's input
  instructions.jsonl  kept tasks with their most similar instructions and average similarity
  rejected.jsonl      every rejected candidate with its reason
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.api import ApiError, Reply
from alpaca_jobs.generate.ask import AskingClient, RequestFailed
from alpaca_jobs.generate.ledger import BudgetExhausted, Ledger
from alpaca_jobs.generate.parse import parse_reply, text_filter
from alpaca_jobs.generate.prompt import build_prompt, request_examples
from alpaca_jobs.generate.rawlog import RawLog
from alpaca_jobs.generate.rouge import Deduper
from alpaca_jobs.generate.seeds import SeedTask, load_seeds

log = logging.getLogger(__name__)
DATA_FILE = "alpaca_data.json"


@dataclass
class Outcome:
    status: str  # completed | interrupted | failed
    stop_reason: str
    kept: int
    rejected: dict[str, int]
    responses: int
    unparseable_responses: int
    replayed_responses: int
    candidates: int
    data_file: str
    failed_requests: int = 0
    error: str | None = None  # the first request that failed for good, when one did
    spend: dict[str, Any] = field(default_factory=dict)

    def results(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "spend"}
        out["rejected_total"] = sum(self.rejected.values())
        return out


class Generation:
    def __init__(self, cfg: Any, run_dir: Path, stop: Any = None, client: AskingClient | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.stop = stop
        self.seeds: list[SeedTask] = load_seeds(cfg.seeds)
        if len(self.seeds) < cfg.prompt_examples:
            from alpaca_jobs.common.errors import UserError

            raise UserError(f"generate.prompt_examples is {cfg.prompt_examples} but {cfg.seeds} "
                            f"has only {len(self.seeds)} seed tasks")
        self.client = client or AskingClient(cfg.api)
        self.pool = Deduper(threshold=cfg.rouge_threshold)
        for task in self.seeds:  # as upstream: generated tasks must differ from the seeds too
            self.pool.add(task.instruction)
        self.kept: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.reasons: Counter[str] = Counter()
        self.done: set[int] = set()
        self.responses = self.unparseable = self.candidates = self.replayed = 0
        self.tokens_per_char = 0.0  # the most prompt tokens per prompt character seen
        self.raw = RawLog(run_dir / "raw.jsonl")
        self.ledger = Ledger(run_dir)
        self.failure: ApiError | None = None
        self._cursor = 0  # the next request index to consider

    # -- state ------------------------------------------------------------------------
    def _absorb(self, entry: dict[str, Any]) -> None:
        """One logged reply through parser, filters and pool (live and on replay alike)."""
        self.done.add(entry["index"])
        self.responses += 1
        if entry.get("prompt_chars"):
            self.tokens_per_char = max(self.tokens_per_char, entry["input_tokens"] / entry["prompt_chars"])
        parsed = parse_reply(entry["text"], self.cfg.prompt_examples + 1, entry["finish_reason"])
        if not parsed.candidates:
            self.unparseable += 1
        for reason, text in parsed.rejected:
            self._reject(reason, text, entry["index"])
        for cand in parsed.candidates:
            self.candidates += 1
            if len(self.kept) >= self.cfg.num_instructions:  # never more than the target
                self._reject("beyond_target", cand.instruction, entry["index"])
                continue
            reason = text_filter(cand, self.cfg.min_words, self.cfg.max_words)
            if reason:
                self._reject(reason, cand.instruction, entry["index"])
                continue
            decision = self.pool.consider(cand.instruction)
            if not decision.keep:
                self._reject("similar", cand.instruction, entry["index"], decision.max_score)
                continue
            self.kept.append({"instruction": cand.instruction, "input": cand.input,
                              "output": cand.output, "most_similar_instructions": decision.most_similar,
                              "avg_similarity_score": decision.avg_similarity, "request": entry["index"]})

    def _reject(self, reason: str, text: str, index: int, score: float | None = None) -> None:
        self.reasons[reason] += 1
        row = {"reason": reason, "text": text, "request": index}
        if score is not None:
            row["rouge_l"] = score
        self.rejected.append(row)

    def _replay(self) -> None:
        entries = list(self.raw.replay())
        for entry in entries:
            self._absorb(entry)
            self.client.spend.add(Reply(entry["text"], entry["finish_reason"], entry["input_tokens"],
                                        entry["output_tokens"], entry.get("attempts", 1), 0.0))
        self.ledger.replay(entries)
        self.replayed = self.responses
        if self.replayed or self.ledger.attempts:
            log.info("resumed from %s: %d replies replayed, %d tasks kept, $%.4f spent, $%.4f more "
                     "possibly billed (attempts whose reply never arrived)", self.raw.path,
                     self.replayed, len(self.kept), self.client.spend.cost(), self.ledger.reserved())

    # -- requests ---------------------------------------------------------------------
    def _prompt(self, index: int) -> tuple[list[int], str]:
        picks = request_examples(self.seeds, self.cfg.prompt_examples, self.cfg.seed, index)
        return picks, build_prompt([self.seeds[i] for i in picks], self.cfg.tasks_per_request,
                                   self.cfg.prompt_file)

    def _ask(self, index: int, first: int, worst: float) -> dict[str, Any]:
        """Request ``index``; its first attempt is already reserved as ``first``."""
        picks, prompt = self._prompt(index)
        n = self.cfg.prompt_examples + self.cfg.tasks_per_request + 1  # the number after the last new task
        rids = {1: first}

        def before(attempt: int) -> int:
            if attempt not in rids:
                rids[attempt] = self.ledger.reserve(index, attempt, worst, self.client.spend.cost(),
                                                    self.cfg.max_usd)
            return rids[attempt]

        def failed(attempt: int, status: int | None) -> None:
            if status is not None:  # answered with an error: not billed
                self.ledger.release(rids[attempt], status)

        reply, rid = self.client.ask_tasks(prompt, stop=[f"\n{n}. Instruction", f"{n}. Instruction:"],
                                     seed=self.cfg.seed + index, before=before, failed=failed)
        return {"index": index, "examples": picks, "finish_reason": reply.finish_reason,
                "text": reply.text, "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens, "attempts": reply.attempts, "reservation": rid,
                "prompt_chars": len(prompt),
                "seconds": round(reply.seconds, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _worst_cost(self, index: int) -> float:
        """What one attempt of request ``index`` could cost at most: its prompt's tokens (at
        the most tokens per character seen so far, +10%; 1 token per 2 characters before the
        first reply) plus max_tokens of output."""
        _, prompt = self._prompt(index)
        per_char = self.tokens_per_char * 1.1 if self.tokens_per_char else 0.5
        inp = int(len(prompt) * per_char) + 16
        return self.client.spend.cost(inp, self.client.cfg["max_tokens"]) - self.client.spend.cost(0, 0)

    def _final_reason(self, pending: dict[Future, int]) -> str | None:
        """Why no request will be sent any more, or None."""
        if self.stop is not None and self.stop.signum is not None:
            return "interrupted"
        if len(self.kept) >= self.cfg.num_instructions:
            return "target reached"
        if self.failure is not None:
            return "a request failed"
        if self.cfg.max_requests is not None and self.responses + len(pending) >= self.cfg.max_requests:
            return "max_requests reached"
        return None

    def _launch(self, pool: ThreadPoolExecutor, pending: dict[Future, int]) -> str | None:
        """Send as many requests as in_flight, the target and the budget allow now."""
        while len(pending) < self.client.cfg["in_flight"]:
            reason = self._final_reason(pending)
            if reason:
                return reason
            # Each request can bring tasks_per_request tasks: send no more than the target needs.
            if len(self.kept) + len(pending) * self.cfg.tasks_per_request >= self.cfg.num_instructions:
                return None
            while self._cursor in self.done:  # replies logged before a restart
                self._cursor += 1
            index = self._cursor
            worst = self._worst_cost(index)
            try:
                rid = self.ledger.reserve(index, 1, worst, self.client.spend.cost(), self.cfg.max_usd)
            except BudgetExhausted:  # replies in flight free their reservations: look again then
                return None if pending else "budget (max_usd) reached"
            pending[pool.submit(self._ask, index, rid, worst)] = index
            self._cursor += 1
        return None

    def _collect(self, fut: Future, index: int) -> None:
        try:
            entry = fut.result()
        except BudgetExhausted as exc:  # a retry that max_usd cannot cover: the request ends
            log.warning("%s; request %d ends without a reply", exc, index)
            return
        except RequestFailed as exc:
            log.error("request %d failed for good: %s", index, exc)
            self.ledger.failed(index, exc.attempts, str(exc))
            self.failure = self.failure or exc
            return
        except Exception as exc:  # noqa: BLE001 - any failure: the other replies still count
            log.exception("request %d failed", index)
            error = exc if isinstance(exc, ApiError) else ApiError(f"request {index}: {type(exc).__name__}: {exc}")
            self.ledger.failed(index, 0, str(error))
            self.failure = self.failure or error
            return
        self.raw.append(entry)  # on disk before it is parsed
        self.client.spend.add(Reply(entry["text"], entry["finish_reason"], entry["input_tokens"],
                                    entry["output_tokens"], entry["attempts"], entry["seconds"]))
        self.ledger.settle(entry["reservation"])
        self._absorb(entry)

    def run(self) -> Outcome:
        self._replay()
        pending: dict[Future, int] = {}
        reason: str | None = None
        bar = _progress(self.cfg.num_instructions, len(self.kept))
        last_write, write_every = time.monotonic(), 5.0
        with ThreadPoolExecutor(max_workers=self.client.cfg["in_flight"]) as pool:
            try:
                while True:
                    if reason is None:
                        reason = self._launch(pool, pending)
                    if not pending:
                        break
                    finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in sorted(finished, key=lambda f: pending[f]):
                        self._collect(fut, pending.pop(fut))  # a failure stops new requests only
                    bar.update(min(len(self.kept), bar.total) - bar.n)
                    bar.set_postfix_str(self._postfix(), refresh=False)
                    if time.monotonic() - last_write > write_every:
                        t0 = time.monotonic()
                        self.write_outputs()  # convenience copies: raw.jsonl is the record
                        last_write = time.monotonic()
                        write_every = max(5.0, 20 * (last_write - t0))  # <= 5% of the time at 52K
            finally:
                for fut in pending:
                    fut.cancel()
                self.raw.close()
                self.ledger.close()
                bar.close()
                self.write_outputs()
        return self._outcome(reason or self._final_reason(pending) or "done")

    def _outcome(self, reason: str) -> Outcome:
        """Completed when the target is met, whatever else happened; failed when a request
        failed for good before it was; interrupted on a stop signal."""
        met = len(self.kept) >= self.cfg.num_instructions
        if met:
            reason = "target reached"
        status = ("completed" if met else "failed" if self.failure is not None
                  else "interrupted" if reason == "interrupted" else "completed")
        return Outcome(status, reason, len(self.kept), dict(self.reasons), self.responses,
                       self.unparseable, self.replayed, self.candidates, str(self.run_dir / DATA_FILE),
                       self.ledger.failed_requests, str(self.failure) if self.failure else None,
                       self.spend())

    def spend(self) -> dict[str, Any]:
        """API spend for the record: real token costs of the replies, every attempt, and what
        attempts without a reply may have cost (``spend_bound_usd`` = cost + unsettled)."""
        out = self.client.spend.as_dict()
        out.update(self.ledger.as_dict(self.responses))
        out["spend_bound_usd"] = round(out["cost_usd"] + out["unsettled_usd"], 6)
        return out

    def _postfix(self) -> str:
        s = self.client.spend
        return (f"kept {len(self.kept)} rejected {sum(self.reasons.values())} "
                f"req {s.requests} tok {s.input_tokens + s.output_tokens} ${s.cost():.4f}")

    def write_outputs(self) -> None:
        from alpaca_jobs.common.files import atomic_write

        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = [{k: r[k] for k in ("instruction", "input", "output")} for r in self.kept]
        atomic_write(self.run_dir / DATA_FILE, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        atomic_write(self.run_dir / "instructions.jsonl",
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.kept))
        atomic_write(self.run_dir / "rejected.jsonl",
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rejected))


def _progress(total: int, initial: int):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=min(initial, total), desc="kept", unit="task", file=sys.stderr,
                mininterval=0.5 if tty else 10.0, dynamic_ncols=tty, ascii=not tty)
