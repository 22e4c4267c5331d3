"""The GPU configuration's compile path, run on CPU: decoder layers compiled in place before
FSDP2 shards them, varlen attention, a full training step (forward, backward, optimizer) on
rows whose lengths and document counts change every step. Zero graph breaks, a bounded number
of compiled graphs, and the same losses as the uncompiled per-example path.

Stand-ins, for what cannot run here: PyTorch's varlen FlashAttention kernel is CUDA-only, so a
``torch.library`` custom op with the same contract (opaque to the compiler, as the real op
is) computes causal attention per document with SDPA; the compiler backend is ``aot_eager``
(dynamo and AOTAutograd trace forward and backward as inductor would be given them; graph
breaks and recompiles are decided there, not in code generation).
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

pytestmark = pytest.mark.integration

_OPS = {}


def _define_stand_in():
    """alpaca_test::varlen(q, k, v, cu, scale): causal attention within each document."""
    if _OPS:
        return _OPS["fn"]
    import torch.nn.functional as F

    def attend(q, k, v, cu, scale):
        bounds = cu.tolist()
        parts = [F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1),
                                                v[s:e].transpose(0, 1), is_causal=True, scale=scale)
                 .transpose(0, 1) for s, e in zip(bounds, bounds[1:], strict=False)]
        return torch.cat(parts)

    @torch.library.custom_op("alpaca_test::varlen", mutates_args=())
    def varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, scale: float) -> torch.Tensor:
        return attend(q, k, v, cu, scale)

    @varlen.register_fake
    def _(q, k, v, cu, scale):
        return torch.empty_like(q)

    @torch.library.custom_op("alpaca_test::varlen_bwd", mutates_args=())
    def varlen_bwd(g: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Autograd is off inside an op's implementation: the softmax-attention gradient by hand.
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        bounds = cu.tolist()
        for s, e in zip(bounds, bounds[1:], strict=False):
            qh, kh, vh, gh = (t[s:e].transpose(0, 1) for t in (q, k, v, g))  # (H, n, D)
            scores = (qh @ kh.transpose(1, 2)) * scale
            mask = torch.ones(e - s, e - s, dtype=torch.bool).triu(1)
            p = scores.masked_fill(mask, float("-inf")).softmax(-1)
            dp = gh @ vh.transpose(1, 2)
            ds = p * (dp - (dp * p).sum(-1, keepdim=True))
            dq[s:e] = ((ds @ kh) * scale).transpose(0, 1)
            dk[s:e] = ((ds.transpose(1, 2) @ qh) * scale).transpose(0, 1)
            dv[s:e] = (p.transpose(1, 2) @ gh).transpose(0, 1)
        return dq, dk, dv

    @varlen_bwd.register_fake
    def _(g, q, k, v, cu, scale):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup(ctx, inputs, output):
        q, k, v, cu, scale = inputs
        ctx.save_for_backward(q, k, v, cu)
        ctx.scale = scale

    def backward(ctx, g):
        q, k, v, cu = ctx.saved_tensors
        dq, dk, dv = varlen_bwd(g, q, k, v, cu, ctx.scale)
        return dq, dk, dv, None, None

    varlen.register_autograd(backward, setup_context=setup)

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
        """The signature of torch 2.11's varlen_attn (the GPU machine's)."""
        assert tuple(window_size) == (-1, 0), "the adapter must ask for causal attention"
        return varlen(query, key, value, cu_seq_q, scale)

    _OPS["fn"] = varlen_attn
    return varlen_attn


def _rows(rng: random.Random, vocab: int, steps: int):
    """Random packed rows, padded to 128, with 2-6 documents each."""
    from alpaca_jobs.train.batches import build_row
    from alpaca_jobs.train.data import Example

    out = []
    for _ in range(steps):
        docs = []
        for _ in range(rng.randint(2, 6)):
            n = rng.randint(8, 120)
            ids = [rng.randrange(3, vocab) for _ in range(n)]
            docs.append(Example(ids, [-100] * (n // 3) + ids[n // 3:]))
        out.append(build_row(docs, 0))
    return out


def _train(rank: int, out: str, impl: str, compiled: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29691" if compiled else "29692",
                      RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    from torch._dynamo.utils import counters
    from transformers import LlamaConfig, LlamaForCausalLM

    from alpaca_jobs.spec import Layout
    from alpaca_jobs.train import attention
    from alpaca_jobs.train.fsdp import init_distributed, shard
    from alpaca_jobs.train.loading import LossModel
    from alpaca_jobs.train.loop import micro_step

    if impl == "varlen":
        attention._varlen_call = attention.make_varlen_call(_define_stand_in())
        plain_compile = torch.nn.Module.compile
        torch.nn.Module.compile = lambda self, **kw: plain_compile(self, backend="aot_eager")
    d = init_distributed()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=300, max_position_embeddings=1024)
    root = LossModel(LlamaForCausalLM(cfg))
    attention.install(root.lm, impl)
    shard(root, root.decoder_layers(), Layout(), d, compiled)
    opt = torch.optim.AdamW(root.parameters(), lr=1e-3)
    torch.compiler.reset()
    counters.clear()
    losses = []
    for row in _rows(random.Random(rank), 300, 10):  # row lengths 128..768, 2-6 documents
        loss = micro_step(root, row, 1e-2, d, impl, 1024)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if rank == 0:
        with open(out, "w") as fh:
            json.dump({"losses": losses, "graph_breaks": sum(counters["graph_break"].values()),
                       "unique_graphs": counters["stats"]["unique_graphs"]}, fh)
    torch.distributed.destroy_process_group()


def test_compiled_layers_with_varlen_attention_under_fsdp2(tmp_path):
    import torch.multiprocessing as mp

    results = {}
    for impl, compiled in (("varlen", True), ("per_sequence", False)):
        out = str(tmp_path / f"{impl}.json")
        mp.spawn(_train, args=(out, impl, compiled), nprocs=2)
        results[impl] = json.loads((tmp_path / f"{impl}.json").read_text())
    compiled_run, eager_run = results["varlen"], results["per_sequence"]
    assert compiled_run["graph_breaks"] == 0
    # 3 layers, 10 steps of changing shapes: one graph for the first shape, one dynamic recompile,
    # shared by every layer (the in-place compile reuses code across layer instances).
    assert 1 <= compiled_run["unique_graphs"] <= 3, compiled_run
    assert eager_run["unique_graphs"] == 0
    worst = max(abs(a - b) / abs(b) for a, b in zip(compiled_run["losses"], eager_run["losses"], strict=True))
    assert worst < 1e-4, (compiled_run["losses"], eager_run["losses"])
