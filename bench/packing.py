"""Tokens the model computes per target token: padded batches (as the original Alpaca code
collates: pad to the longest example of each micro-batch) versus padding-free packing.

    python bench/packing.py                    # log-normal stand-in for alpaca_data.json lengths
    python bench/packing.py --data FILE.json   # a real Alpaca/JSONL file, tokenized by the tiny preset

The stand-in: prompt length ~ 30 + LogNormal(median 30, sigma 0.6) tokens, output length
~ LogNormal(median 70, sigma 0.9) tokens, capped at 512 in total. This is an assumption, not a
measurement of Stanford's file (which is not shipped here): its long-tailed outputs next to
short prompts are what make padding expensive. Both columns see the same examples in the
same order, 4 examples per micro-batch (the 7B recipe's per-GPU batch).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = 30 + int(rng.lognormvariate(3.4, 0.6))
        target = max(1, int(rng.lognormvariate(4.25, 0.9)))
        out.append((min(prompt, 480), min(target, 512 - min(prompt, 480))))
    return out


def from_file(path: str) -> list[tuple[int, int]]:
    from transformers import AutoTokenizer

    from alpaca_jobs.common.template import PromptFormat
    from alpaca_jobs.train.data import build_examples
    from alpaca_jobs.train.models import resolve_base_model

    tok = AutoTokenizer.from_pretrained(resolve_base_model("preset:tiny-llama", path))
    p = PromptFormat()
    examples, _ = build_examples(path, tok, 512, (p.preamble_with_input, p.preamble_no_input))
    return [(len(e.input_ids) - e.num_targets, e.num_targets) for e in examples]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--examples", type=int, default=52_002)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lengths = from_file(args.data) if args.data else synthetic(args.examples, args.seed)
    random.Random(args.seed).shuffle(lengths)
    targets = sum(t for _, t in lengths)
    padded = packed = 0
    for i in range(0, len(lengths), args.micro_batch):
        batch = [p + t for p, t in lengths[i : i + args.micro_batch]]
        padded += len(batch) * max(batch)
        packed += sum(batch)
    source = args.data or f"log-normal stand-in, {len(lengths)} examples"
    print(f"data: {source}; micro-batch {args.micro_batch}")
    print(f"target tokens              {targets:>12,}")
    print(f"computed tokens, padded    {padded:>12,}  ({padded / targets:.3f} per target token)")
    print(f"computed tokens, packed    {packed:>12,}  ({packed / targets:.3f} per target token)")
    print(f"ratio padded / packed      {padded / packed:.3f}x  (work packing saves: {1 - packed / padded:.1%})")


if __name__ == "__main__":
    main()
