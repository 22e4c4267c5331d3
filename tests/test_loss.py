"""The fused chunked linear cross-entropy: exact vs the naive loss, no N x V tensor, no host syncs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from alpaca_jobs.train.data import IGNORE_INDEX
from alpaca_jobs.train.loss import linear_cross_entropy_sum, target_positions

SCALE = 3.7  # a non-unit upstream gradient


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def inputs(n: int, d: int, v: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g) * 0.2).to(dtype).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g)
    return h, w, t


def reference(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor):
    """float64 loss and gradients of (loss * SCALE)."""
    h64 = h.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    loss = F.cross_entropy(h64 @ w64.T, t, reduction="sum")
    (loss * SCALE).backward()
    return loss.detach(), h64.grad, w64.grad


def ours(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, chunk: int):
    loss = linear_cross_entropy_sum(h, w, t, chunk_tokens=chunk)
    (loss * SCALE).backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("n,chunk", [(100, 32), (77, 16), (5, 64), (64, 64), (1, 1), (0, 16)])
def test_matches_float64_reference_fp32(n, chunk):
    h, w, t = inputs(n, 48, 300, seed=n)
    ref_loss, ref_gh, ref_gw = reference(h, w, t)
    loss, gh, gw = ours(h, w, t, chunk)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert gh.shape == h.shape and gh.dtype == h.dtype
    assert gw.shape == w.shape and gw.dtype == w.dtype
    if n == 0:
        assert loss.item() == 0.0
        assert not gh.numel() and torch.count_nonzero(gw).item() == 0
        return
    assert rel(loss, ref_loss) < 1e-5
    assert rel(gh, ref_gh) < 1e-5
    assert rel(gw, ref_gw) < 1e-5


def test_chunk_size_does_not_change_result():
    h, w, t = inputs(50, 32, 200)
    a = linear_cross_entropy_sum(h, w, t, chunk_tokens=7)
    b = linear_cross_entropy_sum(h, w, t, chunk_tokens=4096)
    assert rel(a, b) < 1e-6


def test_bf16_close_to_fp32_reference():
    h, w, t = inputs(200, 64, 500, dtype=torch.bfloat16, seed=1)
    ref_loss, ref_gh, ref_gw = reference(h, w, t)  # float64 of the bf16 values
    loss, gh, gw = ours(h, w, t, chunk=48)
    assert torch.isfinite(loss).item()
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16
    assert rel(loss, ref_loss) < 1e-2
    assert rel(gh, ref_gh) < 1e-2
    assert rel(gw, ref_gw) < 1e-2


def test_no_grad_returns_loss_only():
    h, w, t = inputs(30, 16, 100)
    with torch.no_grad():
        loss = linear_cross_entropy_sum(h, w, t, chunk_tokens=8)
    assert not loss.requires_grad
    assert rel(loss, reference(h, w, t)[0]) < 1e-5


def test_frozen_weight_gets_no_grad():
    h, w, t = inputs(30, 16, 100)
    w.requires_grad_(False)
    (linear_cross_entropy_sum(h, w, t, chunk_tokens=8) * SCALE).backward()
    assert w.grad is None
    assert rel(h.grad, reference(h, w, t)[1]) < 1e-5


def test_second_backward_is_refused():
    h, w, t = inputs(10, 8, 20)
    loss = linear_cross_entropy_sum(h, w, t, chunk_tokens=4)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward"):
        loss.backward()


class OpRecorder(TorchDispatchMode):
    """Records each aten op's name and the largest numel among its outputs."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, (tuple, list)) else (out,)
        numel = max((o.numel() for o in flat if isinstance(o, torch.Tensor)), default=0)
        self.ops.append((str(func.overloadpacket.__name__), numel))
        return out

    @property
    def largest(self) -> int:
        return max(n for _, n in self.ops)


def test_never_creates_an_n_by_v_tensor():
    n, d, v = 1000, 64, 5000
    h, w, t = inputs(n, d, v)
    with OpRecorder() as rec:
        linear_cross_entropy_sum(h, w, t, chunk_tokens=128).backward()
    assert rec.largest < n * v
    assert rec.largest <= max(128 * v, v * d)

    h.grad = w.grad = None
    with OpRecorder() as naive:  # the detector does see the naive path's logits
        F.cross_entropy(h @ w.T, t, reduction="sum").backward()
    assert naive.largest >= n * v


SYNC_OPS = {"_local_scalar_dense", "nonzero", "item", "is_nonzero"}


@pytest.mark.parametrize("n", [0, 37, 256])
def test_no_host_syncs(n):
    h, w, t = inputs(n, 32, 400)
    with OpRecorder() as rec:
        (linear_cross_entropy_sum(h, w, t, chunk_tokens=64) * SCALE).backward()
    assert rec.ops, "the recorder saw nothing"
    assert [op for op, _ in rec.ops if op in SYNC_OPS] == []


def test_target_positions():
    x = IGNORE_INDEX
    #          0  1  2   3   4  5  6  7   8   9
    labels = [x, x, x, 11, 12, x, x, 21, 22, 23]
    assert target_positions(labels) == ([2, 3, 6, 7, 8], [11, 12, 21, 22, 23])
    assert target_positions([]) == ([], [])
    assert target_positions([5]) == ([], [])  # position 0 predicts nothing that exists
    assert target_positions([x, x]) == ([], [])
    assert target_positions([7, 8]) == ([0], [8])  # labels[0] is never a target
    assert target_positions([x, 4, x]) == ([0], [4])  # a trailing -100 keeps nothing past it


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).float().train()


def padded_batch():
    """Right-padded rows; prompt (and padding) labels are -100."""
    g = torch.Generator().manual_seed(3)
    rows = [(5, 9), (8, 3), (3, 12)]  # (prompt, output) lengths
    length = max(p + o for p, o in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, (p, o) in enumerate(rows):
        ids[b, : p + o] = torch.randint(1, 300, (p + o,), generator=g)
        mask[b, : p + o] = 1
        labels[b, p : p + o] = ids[b, p : p + o]
    return ids, mask, labels


def grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_equals_shifted_cross_entropy_on_llama():
    model = tiny_llama()
    ids, mask, labels = padded_batch()

    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    ref = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    (ref * SCALE).backward()
    ref_grads = grads(model)
    model.zero_grad(set_to_none=True)

    def per_row(hidden: torch.Tensor) -> torch.Tensor:  # one call per row, as specified
        total = torch.zeros((), dtype=torch.float32)
        for b in range(ids.shape[0]):
            pos, tgt = target_positions(labels[b].tolist())
            total = total + linear_cross_entropy_sum(
                hidden[b][torch.tensor(pos)], model.lm_head.weight, torch.tensor(tgt), chunk_tokens=4
            )
        return total

    def one_call(hidden: torch.Tensor) -> torch.Tensor:  # all rows gathered: one V x d buffer
        flat, tgts = [], []
        for b in range(ids.shape[0]):
            pos, tgt = target_positions(labels[b].tolist())
            flat += [b * ids.shape[1] + p for p in pos]
            tgts += tgt
        rows = hidden.flatten(0, 1)[torch.tensor(flat)]
        return linear_cross_entropy_sum(rows, model.lm_head.weight, torch.tensor(tgts), 16)

    for loss_fn in (per_row, one_call):
        model.zero_grad(set_to_none=True)
        hidden = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        total = loss_fn(hidden)
        (total * SCALE).backward()
        got = grads(model)

        assert rel(total, ref) < 1e-5, loss_fn.__name__
        assert got.keys() == ref_grads.keys() and "lm_head.weight" in got
        for k in ref_grads:
            assert rel(got[k], ref_grads[k]) < 1e-5, (loss_fn.__name__, k)
