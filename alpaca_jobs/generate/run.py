"""The generation loop: concurrent requests, replies logged then parsed in arrival order,
text filters, the ROUGE-L pool, a hard API budget, and outputs a person can open.

Files in the run directory:
  raw.jsonl           every reply, as received (the job's memory; see rawlog.py)
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

from alpaca_jobs.api import Client, Reply
from alpaca_jobs.generate.parse import parse_reply, text_filter
from alpaca_jobs.generate.prompt import build_prompt, request_examples
from alpaca_jobs.generate.rawlog import RawLog
from alpaca_jobs.generate.rouge import Deduper
from alpaca_jobs.generate.seeds import SeedTask, load_seeds

log = logging.getLogger(__name__)
DATA_FILE = "alpaca_data.json"


@dataclass
class Outcome:
    status: str  # completed | interrupted
    stop_reason: str
    kept: int
    rejected: dict[str, int]
    responses: int
    unparseable_responses: int
    replayed_responses: int
    candidates: int
    data_file: str
    spend: dict[str, Any] = field(default_factory=dict)

    def results(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "spend"}
        out["rejected_total"] = sum(self.rejected.values())
        return out


class Generation:
    def __init__(self, cfg: Any, run_dir: Path, stop: Any = None, client: Client | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.stop = stop
        self.seeds: list[SeedTask] = load_seeds(cfg.seeds)
        if len(self.seeds) < cfg.prompt_examples:
            from alpaca_jobs.common.errors import UserError

            raise UserError(f"generate.prompt_examples is {cfg.prompt_examples} but {cfg.seeds} "
                            f"has only {len(self.seeds)} seed tasks")
        self.client = client or Client(cfg.api)
        self.pool = Deduper(threshold=cfg.rouge_threshold)
        for task in self.seeds:  # as upstream: generated tasks must differ from the seeds too
            self.pool.add(task.instruction)
        self.kept: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.reasons: Counter[str] = Counter()
        self.done: set[int] = set()
        self.responses = self.unparseable = self.candidates = self.replayed = 0
        self.max_prompt_tokens = 0
        self.raw = RawLog(run_dir / "raw.jsonl")

    # -- state ------------------------------------------------------------------------
    def _absorb(self, entry: dict[str, Any]) -> None:
        """One logged reply through parser, filters and pool (live and on replay alike)."""
        self.done.add(entry["index"])
        self.responses += 1
        self.max_prompt_tokens = max(self.max_prompt_tokens, entry["input_tokens"])
        parsed = parse_reply(entry["text"], self.cfg.prompt_examples + 1, entry["finish_reason"])
        if not parsed.candidates:
            self.unparseable += 1
        for reason, text in parsed.rejected:
            self._reject(reason, text, entry["index"])
        for cand in parsed.candidates:
            self.candidates += 1
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
        for entry in self.raw.replay():
            self._absorb(entry)
            self.client.spend.add(Reply(entry["text"], entry["finish_reason"], entry["input_tokens"],
                                        entry["output_tokens"], entry.get("attempts", 1), 0.0))
        self.replayed = self.responses
        if self.replayed:
            log.info("resumed from %s: %d replies replayed, %d tasks kept, $%.4f already spent",
                     self.raw.path, self.replayed, len(self.kept), self.client.spend.cost())

    # -- requests ---------------------------------------------------------------------
    def _prompt(self, index: int) -> tuple[list[int], str]:
        picks = request_examples(self.seeds, self.cfg.prompt_examples, self.cfg.seed, index)
        return picks, build_prompt([self.seeds[i] for i in picks], self.cfg.tasks_per_request,
                                   self.cfg.prompt_file)

    def _ask(self, index: int) -> dict[str, Any]:
        picks, prompt = self._prompt(index)
        n = self.cfg.tasks_per_request + 1
        reply = self.client.complete(prompt, stop=[f"\n{n}. Instruction", f"{n}. Instruction:"],
                                     seed=self.cfg.seed + index)
        return {"index": index, "examples": picks, "finish_reason": reply.finish_reason,
                "text": reply.text, "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens, "attempts": reply.attempts,
                "seconds": round(reply.seconds, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _worst_cost(self, index: int) -> float:
        """What one more request could cost at most: prompt tokens (measured, or 1 token per
        2 characters before the first reply) plus max_tokens of output."""
        _, prompt = self._prompt(index)
        inp = int(self.max_prompt_tokens * 1.25) + 16 if self.max_prompt_tokens else len(prompt) // 2 + 16
        return self.client.spend.cost(inp, self.client.cfg["max_tokens"]) - self.client.spend.cost(0, 0)

    def _stop_reason(self, in_flight: dict[Future, tuple[int, float]], index: int) -> str | None:
        if self.stop is not None and self.stop.signum is not None:
            return "interrupted"
        if len(self.kept) >= self.cfg.num_instructions:
            return "target reached"
        if self.cfg.max_requests is not None and self.responses + len(in_flight) >= self.cfg.max_requests:
            return "max_requests reached"
        in_flight_cost = sum(worst for _, worst in in_flight.values())
        if self.cfg.max_usd is not None and (self.client.spend.cost() + in_flight_cost
                                             + self._worst_cost(index) > self.cfg.max_usd):
            return "budget (max_usd) reached"
        return None

    def run(self) -> Outcome:
        self._replay()
        pending: dict[Future, tuple[int, float]] = {}
        indices = (i for i in range(10**12) if i not in self.done)
        reason: str | None = None
        bar = _progress(self.cfg.num_instructions, len(self.kept))
        last_write, write_every = time.monotonic(), 5.0
        with ThreadPoolExecutor(max_workers=self.client.cfg["in_flight"]) as pool:
            try:
                index = next(indices)
                while True:
                    while reason is None and len(pending) < self.client.cfg["in_flight"]:
                        reason = self._stop_reason(pending, index)
                        if reason is None:
                            pending[pool.submit(self._ask, index)] = (index, self._worst_cost(index))
                            index = next(indices)
                    if not pending:
                        break
                    finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in sorted(finished, key=lambda f: pending[f][0]):
                        pending.pop(fut)
                        entry = fut.result()  # ApiError: stop the job with its message
                        self.raw.append(entry)  # on disk before it is parsed
                        self._absorb(entry)
                    if reason is None and self.stop is not None and self.stop.signum is not None:
                        reason = "interrupted"
                    bar.update(len(self.kept) - bar.n)
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
                bar.close()
                self.write_outputs()
        status = "interrupted" if reason == "interrupted" else "completed"
        return Outcome(status, reason or "done", len(self.kept), dict(self.reasons), self.responses,
                       self.unparseable, self.replayed, self.candidates,
                       str(self.run_dir / DATA_FILE), self.client.spend.as_dict())

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
