"""Alpaca-like synthetic training data for the throughput bench.

    python bench/alpaca_like.py OUT.json [--examples 4000] [--seed 0]   # writes the file, prints stats

An Alpaca JSON file (a list of ``{instruction, input, output}``) whose token lengths, under
the tiny preset's byte-level BPE tokenizer trained on the file itself, follow the log-normal
stand-in of ``bench/packing.py``: prompt ~ 30 + LogNormal(median 30, sigma 0.6) tokens,
target (output + EOS) ~ LogNormal(median 70, sigma 0.9) tokens, capped at 512 in total. The
text is made of real words, drawn with their frequencies from ``seeds/seed_tasks.jsonl``,
in sentences.

The stand-in's 30 is its guess at the prompt template; the project's template (BOS,
preamble, section markers) costs about 44 tokens under this tokenizer, 64 with an input
section. So a prompt's budget from the stand-in is kept where it can be: an example gets an
input section only when its budget leaves >= 8 tokens of text beside that template (about a
third do, the longer prompts, as in Alpaca), and a budget below the template + 2 tokens is
raised to that (the short end of the prompt distribution is a little heavier than the
stand-in's). Targets are capped so that no example exceeds 512 tokens.

How the lengths are hit: byte-level BPE never merges across pre-tokens (" word", ".", "\\n"),
so a text's token count is the sum of its pieces' counts, and each field is filled piece by
piece up to its budget. The budgets are set with a tokenizer trained on a first draft of the
data (same word distribution), then the tokenizer the model is built with is trained on the
final file; the stats printed are measured with that final tokenizer.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SEEDS = ROOT / "seeds" / "seed_tasks.jsonl"
MIN_WITH_INPUT = 8  # an input section only when the prompt budget leaves this many tokens for text


def seed_words(path: Path = SEEDS) -> Counter[str]:
    """Lower-cased words of every instruction, input and output of the seed tasks."""
    words: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        task = json.loads(line)
        texts = [task["instruction"]] + [f"{i['input']} {i['output']}" for i in task["instances"]]
        for text in texts:
            words.update(w.lower() for w in re.findall(r"[A-Za-z]+", text))
    return words


class Filler:
    """Writes sentences of seed words whose token count (under ``tok``) is a given budget."""

    def __init__(self, tok, words: Counter[str], rng: random.Random) -> None:
        self.tok, self.rng = tok, rng
        self.vocab = list(words)
        self.cum = list(itertools.accumulate(words[w] for w in self.vocab))
        self._cost: dict[str, int] = {}

    def cost(self, piece: str) -> int:
        if piece not in self._cost:
            self._cost[piece] = len(self.tok.encode(piece, add_special_tokens=False))
        return self._cost[piece]

    def _word(self) -> str:
        return self.vocab[bisect.bisect_right(self.cum, self.rng.random() * self.cum[-1])]

    def text(self, budget: int) -> str:
        """Sentences of 6-18 words, each ended by '.', filling ``budget`` tokens (>= 1 word)."""
        pieces: list[str] = []
        used = 0
        while True:
            n = self.rng.randint(6, 18)
            for k in range(n):
                word = self._word()
                word = word.capitalize() if k == 0 else word
                piece = word if not pieces else " " + word
                # keep room for the closing '.'
                if pieces and used + self.cost(piece) + self.cost(".") > budget:
                    return "".join(pieces) + "."
                pieces.append(piece)
                used += self.cost(piece)
            pieces.append(".")
            used += self.cost(".")
            if used >= budget:
                return "".join(pieces)


def template_tokens(tok, with_input: bool) -> int:
    """Tokens of the prompt template alone (BOS, preamble, section markers)."""
    from alpaca_jobs.common.template import PromptFormat, format_prompt

    p = PromptFormat()
    filled = format_prompt("Word", "Word" if with_input else "", p.preamble_with_input, p.preamble_no_input)
    fields = 2 if with_input else 1
    return len(tok.encode(filled, add_special_tokens=True)) - fields * len(tok.encode("Word", add_special_tokens=False))


def draft(tok, words: Counter[str], lengths: list[tuple[int, int]], seed: int,
          max_length: int = 512) -> list[dict[str, str]]:
    """Records whose prompt/target token counts under ``tok`` are about the given ones."""
    from alpaca_jobs.common.template import PromptFormat, format_prompt

    p = PromptFormat()
    fill = Filler(tok, words, random.Random(seed))
    tmpl = {True: template_tokens(tok, True), False: template_tokens(tok, False)}
    records = []
    for prompt, target in lengths:
        has_input = prompt - tmpl[True] >= MIN_WITH_INPUT
        content = max(prompt - tmpl[has_input], 2)
        if has_input:
            first = max(2, round(content * 0.35))
            instruction, inp = fill.text(first), fill.text(content - first)
        else:
            instruction, inp = fill.text(content), ""
        used = len(tok.encode(format_prompt(instruction, inp, p.preamble_with_input, p.preamble_no_input)))
        target = min(target, max_length - used)  # the stand-in's cap: 512 tokens in all
        output = fill.text(max(target - 1, 1))  # the target is the output plus EOS
        records.append({"instruction": instruction, "input": inp, "output": output})
    return records


def write(path: Path, n: int = 4000, seed: int = 0) -> None:
    """Write ``n`` Alpaca-like records to ``path`` (JSON list)."""
    from packing import synthetic

    from alpaca_jobs.train.models import _corpus, train_tiny_tokenizer

    words = seed_words()
    lengths = synthetic(n, seed)
    tok = train_tiny_tokenizer(_corpus([str(SEEDS)]))  # first draft: the seeds' own tokenizer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(draft(tok, words, lengths, seed + 1)))
    tok = train_tiny_tokenizer(_corpus([str(path)]))  # same distribution as the final file's
    path.write_text(json.dumps(draft(tok, words, lengths, seed + 1), indent=0))


@dataclass(frozen=True)
class LengthStats:
    examples: int
    prompt: tuple[float, float, float]  # median, p90, mean (tokens)
    target: tuple[float, float, float]
    total: tuple[float, float, float, int]  # median, p95, mean, max
    truncated: int
    padded_per_target: float  # micro-batches of 4 in file order
    packed_per_target: float

    def lines(self) -> list[str]:
        def f(xs: tuple) -> str:
            return " / ".join(f"{x:.0f}" for x in xs)

        return [
            f"data: {self.examples} examples; prompt tokens median/p90/mean {f(self.prompt)} "
            f"(stand-in 60 median); target tokens {f(self.target)} (stand-in 70 median)",
            f"      total tokens median/p95/mean/max {f(self.total)}; truncated at 512: {self.truncated}; "
            f"computed per target token, micro-batch 4: padded {self.padded_per_target:.3f}, "
            f"packed {self.packed_per_target:.3f}",
        ]


def _q(xs: list[int], q: float) -> float:
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def measure(path: Path, tok, micro_batch: int = 4, max_length: int = 512) -> LengthStats:
    """Token lengths of ``path`` as the training job tokenizes it (prompt incl. BOS, target incl. EOS)."""
    from alpaca_jobs.common.template import PromptFormat
    from alpaca_jobs.train.data import build_examples

    p = PromptFormat()
    examples, stats = build_examples(path, tok, max_length, (p.preamble_with_input, p.preamble_no_input))
    prompt = [len(e.input_ids) - e.num_targets for e in examples]
    target = [e.num_targets for e in examples]
    total = [len(e.input_ids) for e in examples]
    padded = sum(len(b) * max(b) for b in (total[i : i + micro_batch] for i in range(0, len(total), micro_batch)))

    def mean(xs: list[int]) -> float:
        return sum(xs) / len(xs)

    return LengthStats(
        len(examples),
        (_q(prompt, 0.5), _q(prompt, 0.9), mean(prompt)),
        (_q(target, 0.5), _q(target, 0.9), mean(target)),
        (_q(total, 0.5), _q(total, 0.95), mean(total), max(total)),
        stats.truncated,
        padded / sum(target),
        sum(total) / sum(target),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--examples", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from alpaca_jobs.train.models import _corpus, train_tiny_tokenizer

    write(args.out, args.examples, args.seed)
    tok = train_tiny_tokenizer(_corpus([str(args.out)]))  # what build_tiny_llama trains
    print("\n".join(measure(args.out, tok).lines()))


if __name__ == "__main__":
    main()
