"""What one optimizer step of the 7B recipe asks of the machine, before and after the step plan:
collectives (count and bytes) per optimizer step and host syncs per micro-step, counted with a
dispatch hook (alpaca_jobs/train/probe.py) on two gloo processes. Counts, not seconds.

    python bench/step_anatomy.py            # table
    python bench/step_anatomy.py --json     # one JSON object (tests/test_step_anatomy.py reads it)

Both sides run the same model (a 4-layer random Llama; collective counts per layer are the
7B's, bytes scale with the model), the same FSDP2 layout as jobs/layouts/fsdp2-gpu-bf16.yaml
(reshard after forward; fp32 here because it runs on CPU) and the same examples: ranks 0 and 1's
share of one 128-example step of Alpaca-like lengths (bench/packing.py's stand-in) split over 8
ranks, as on the 8x A100 node.
- before: the loop as it was: every 8th example per rank, micro-batch 4 x 4 accumulation steps,
  each packed row fed to the causal LM's SDPA path with position_ids (transformers then builds
  a dense block mask), gradients reduce-scattered and weights resharded on every micro-step,
  plus its per-step all-reduces (target count up front, loss and tokens after, the stop flag).
- after: the step plan's rows (one, at the 7B budget of 8192 tokens) through the loop's own
  ``train_step``, the loss all-reduce, and the stop/checkpoint agreement every 5 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
STEPS = 5
WORLD_7B, GLOBAL_BATCH, MICRO_BATCH, BUDGET = 8, 128, 4, 8192


def _examples(vocab: int):
    from packing import synthetic

    from alpaca_jobs.train.data import IGNORE_INDEX, Example

    rng = random.Random(1)
    out = []
    for prompt, target in synthetic(2_000, seed=0):
        ids = [rng.randrange(3, vocab) for _ in range(prompt + target)]
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def _model(d, mode: str):
    """after: the loop's LossModel with per-sequence attention; before: the plain causal LM with
    SDPA fed position_ids (the dense-mask path), as the loop used it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alpaca_jobs.spec import Layout
    from alpaca_jobs.train import attention
    from alpaca_jobs.train.fsdp import shard
    from alpaca_jobs.train.loading import LossModel

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=512, max_position_embeddings=1024,
                      attn_implementation="sdpa")
    lm = LlamaForCausalLM(cfg)
    root = LossModel(lm) if mode == "after" else lm
    if mode == "after":
        attention.install(lm, "per_sequence")
    layout = Layout(fsdp_config={"fsdp_reshard_after_forward": True})
    shard(root, list(lm.model.layers), layout, d, False)
    return root


def _before(root, opt, batches, d, probe):
    """The old loop's step: all-reduce the target count, 4 synced micro-steps, clip, step,
    all-reduce loss and tokens, all-reduce the stop flag."""
    from alpaca_jobs.train.fsdp import clip_grad_norm
    from alpaca_jobs.train.packing import forward_loss_sum

    dist.all_reduce(torch.ones(1))
    for batch in batches:
        with probe():
            forward_loss_sum(root, batch).backward()
    clip_grad_norm(list(root.parameters()), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    dist.all_reduce(torch.ones(2))
    dist.all_reduce(torch.zeros(1))


def _after(root, opt, sched, rows, d, step, probe, totals):
    """The loop's own step, then the same rows' micro-steps again under the sync probe."""
    from alpaca_jobs.train.loop import _agree, micro_step, train_step

    with totals:
        if step % 5 == 0:
            _agree(d, False, False)
        loss, _ = train_step(root, opt, sched, rows, 1000, d, 1.0, "per_sequence", 1024)
        dist.all_reduce(loss.clone())
    for row in rows:
        with probe():
            micro_step(root, row, 1e-3, d, "per_sequence", 1024)
    opt.zero_grad(set_to_none=True)


def _worker(rank: int, out: str) -> None:
    from contextlib import contextmanager

    from alpaca_jobs.train.batches import build_row
    from alpaca_jobs.train.fsdp import init_distributed
    from alpaca_jobs.train.packing import pack
    from alpaca_jobs.train.plan import StepPlan
    from alpaca_jobs.train.probe import StepProbe

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29633", RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    d = init_distributed()
    examples = _examples(512)
    plan = StepPlan([len(e.input_ids) for e in examples], GLOBAL_BATCH, WORLD_7B, BUDGET, 1, seed=42)
    result = {}
    for mode in ("before", "after"):
        root = _model(d, mode)
        opt = torch.optim.AdamW(root.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        totals = StepProbe()
        micro_syncs = []

        @contextmanager
        def probe(_syncs=micro_syncs):
            with StepProbe() as p:
                yield
            _syncs.append(sum(p.syncs.values()))

        micro_steps = 0
        for step in range(STEPS):
            if mode == "before":
                mine = plan.step_examples(step)[rank::WORLD_7B]
                rows = [pack([examples[i] for i in mine[k:k + MICRO_BATCH]])
                        for k in range(0, len(mine), MICRO_BATCH)]
                with totals:
                    _before(root, opt, rows, d, probe)
            else:
                rows = [build_row([examples[i] for i in r], 0) for r in plan.rows(step, rank)]
                _after(root, opt, sched, rows, d, step, probe, totals)
            micro_steps += len(rows)
        result[mode] = {"collectives_per_step": sum(totals.collectives.values()) / STEPS,
                        "collective_bytes_per_step": totals.collective_bytes / STEPS,
                        "micro_steps_per_step": micro_steps / STEPS,
                        "host_syncs_per_micro_step": sum(micro_syncs) / max(len(micro_syncs), 1),
                        "by_op": dict(totals.collectives)}
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "anatomy.json")
        mp.spawn(_worker, args=(out,), nprocs=2)
        result = json.loads(Path(out).read_text())
    b, a = result["before"], result["after"]
    result["collective_ratio"] = b["collectives_per_step"] / a["collectives_per_step"]
    result["bytes_ratio"] = b["collective_bytes_per_step"] / a["collective_bytes_per_step"]
    if args.json:
        print(json.dumps(result))
        return
    print("7B recipe step (128 examples, 8 ranks' shares; 2 gloo processes, 4-layer model)")
    print(f"{'':8}{'micro-steps':>12}{'collectives':>13}{'bytes':>12}{'host syncs':>12}")
    for name, r in (("before", b), ("after", a)):
        syncs = r["host_syncs_per_micro_step"]
        print(f"{name:8}{r['micro_steps_per_step']:>12.1f}{r['collectives_per_step']:>13.1f}"
              f"{r['collective_bytes_per_step']:>12,.0f}{syncs:>12.1f}")
    print(f"collectives before / after: {result['collective_ratio']:.2f}x, bytes {result['bytes_ratio']:.2f}x")


if __name__ == "__main__":
    main()
