"""How evenly the step plan spreads a step's tokens over ranks: slowest / mean rank tokens per
optimizer step (FSDP waits for the slowest rank at every layer), our token-balanced plan
against the strided ``[rank::world]`` split it replaced, on the same steps.

    python bench/plan_balance.py                 # 7B recipe: 52,002 Alpaca-like examples, 8 ranks
    python bench/plan_balance.py --data FILE     # a real Alpaca/JSONL file (tiny-preset tokenizer)

Lengths: bench/packing.py's log-normal stand-in for alpaca_data.json (an assumption, said
there), or a real file. Global batch 128, budget 8192 tokens per row (jobs/train.yaml). The
strided split is counted per micro-step (micro-batch 4, as the old loop synchronised ranks at
each); ours per step (one row per rank at this budget). Last, short step of each epoch left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]


def main() -> None:
    from packing import from_file, synthetic

    from alpaca_jobs.train.plan import StepPlan

    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--global-batch", type=int, default=128)
    ap.add_argument("--budget", type=int, default=8192)
    args = ap.parse_args()
    lengths = [p + t for p, t in (from_file(args.data) if args.data else synthetic(52_002, 0))]
    plan = StepPlan(lengths, args.global_batch, args.ranks, args.budget, 1, seed=42)
    ours, strided, micro = [], [], []
    for step in range(plan.steps_per_epoch - 1):
        loads = [sum(lengths[i] for i in share) for share in plan.shares(step)]
        ours.append(max(loads) / statistics.mean(loads))
        micro.append(plan.micro_steps(step))
        ex = plan.step_examples(step)
        per_rank = [ex[r :: args.ranks] for r in range(args.ranks)]
        for k in range(0, len(per_rank[0]), 4):
            loads = [sum(lengths[i] for i in mine[k : k + 4]) for mine in per_rank]
            strided.append(max(loads) / statistics.mean(loads))
    print(f"{len(lengths):,} examples, {args.ranks} ranks, global batch {args.global_batch}, "
          f"budget {args.budget} tokens: {len(ours)} steps")
    for name, xs in (("token-balanced plan (per step)", ours), ("strided split (per micro-step)", strided)):
        print(f"{name:32} slowest/mean rank tokens: median {statistics.median(xs):.3f}, "
              f"mean {statistics.mean(xs):.3f}, p99 {sorted(xs)[int(0.99 * len(xs))]:.3f}, max {max(xs):.3f}")
    print(f"micro-steps per optimizer step (ours): {statistics.mean(micro):.2f} on average, max {max(micro)}")


if __name__ == "__main__":
    main()
