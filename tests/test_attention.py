"""Packed-row attention (alpaca_jobs.train.attention): exact against per-document SDPA, no
L x L tensor, no device->host sync, compiles without graph breaks.

CPU facts these tests work around (torch 2.13): flex_attention has no backward on CPU (it
raises NotImplementedError), so flex is checked forward-only here; and varlen_attn is CUDA-only,
so its argument adapter is checked against stand-ins for the kernel. The ``cuda`` tests at the
end run the real kernels (skipped without a GPU).
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.train import attention

CPU = torch.device("cpu")
PAD_ID = 0
# Six documents (<= 100 tokens) and a padding document: L = 384, larger than any document and
# than the vocabulary (300), so a tensor with two dims >= L can only be an L x L one.
DOCS = [37, 100, 64, 23, 90, 41]
ROW = 384
LENGTHS = [*DOCS, ROW - sum(DOCS)]
SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "item"}


def tiny_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                       max_position_embeddings=1024, attn_implementation="sdpa")


@pytest.fixture(scope="module")
def base() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config()).float().train()


def installed(base: LlamaForCausalLM, impl: str) -> LlamaForCausalLM:
    model = copy.deepcopy(base)
    attention.install(model, impl)
    return model


def documents(seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 300, (n,), generator=gen) for n in DOCS]


def packed(docs: list[torch.Tensor], row: int = ROW) -> dict[str, torch.Tensor]:
    """One row: the documents, then padding; positions restart per document."""
    pad = row - sum(len(d) for d in docs)
    ids = torch.cat([*docs, torch.full((pad,), PAD_ID)])
    pos = torch.cat([torch.arange(len(d)) for d in [*docs, ids[:pad]]])
    labels = torch.cat([torch.cat([torch.tensor([-100]), d[1:]]) for d in docs]
                       + [torch.full((pad,), -100)])
    return {"input_ids": ids[None], "position_ids": pos[None], "labels": labels[None]}


def packed_loss(model: LlamaForCausalLM, row: dict, kw: dict) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(input_ids=row["input_ids"], position_ids=row["position_ids"],
                   use_cache=False, **kw).logits
    loss = F.cross_entropy(logits[0, :-1], row["labels"][0, 1:], reduction="sum")
    return logits, loss


def padded_loss(model: LlamaForCausalLM, docs: list[torch.Tensor]) -> torch.Tensor:
    """The reference: a right-padded batch through stock SDPA, summed next-token loss."""
    width = max(len(d) for d in docs)
    ids = torch.full((len(docs), width), PAD_ID)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, d in enumerate(docs):
        ids[i, : len(d)], mask[i, : len(d)], labels[i, : len(d)] = d, 1, d
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")


def assert_matches_reference(base: LlamaForCausalLM, model: LlamaForCausalLM, kw: dict,
                             grads: bool) -> None:
    docs = documents()
    row = packed(docs)
    ref = copy.deepcopy(base)
    with torch.set_grad_enabled(grads):
        logits, loss = packed_loss(model, row, kw)
        start = 0
        for d in docs:
            alone = ref(input_ids=d[None], use_cache=False).logits[0]
            torch.testing.assert_close(logits[0, start : start + len(d)], alone,
                                       atol=1e-5, rtol=1e-5)
            start += len(d)
        ref_loss = padded_loss(ref, docs)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    if grads:
        loss.backward()
        ref_loss.backward()
        for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, name=name: f"{name}: {m}")


class OpRecorder(TorchDispatchMode):
    """Records every aten op's output shapes and counts the ops that read a device value."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        self.shapes += [(name, tuple(t.shape)) for t in tree_leaves(out)
                        if isinstance(t, torch.Tensor)]
        return out

    def square(self, row: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(n, s) for n, s in self.shapes if sum(d >= row for d in s) >= 2]

    def syncs(self) -> dict[str, int]:
        return {n: c for n, c in self.ops.items() if n in SYNC_OPS}


# --- 1. exactness -------------------------------------------------------------------------


def test_per_sequence_matches_separate_documents_logits_loss_and_grads(base):
    model = installed(base, "per_sequence")
    kw = attention.row_kwargs(LENGTHS, "per_sequence", CPU, max_length=1024)
    assert_matches_reference(base, model, kw, grads=True)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_matches_separate_documents_forward(base):
    # Eager flex on CPU runs the unfused reference; it has no backward on CPU at all.
    model = installed(base, "flex")
    kw = attention.row_kwargs(LENGTHS, "flex", CPU, max_length=1024)
    assert_matches_reference(base, model, kw, grads=False)


def test_flex_block_mask_equals_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    for lengths in (LENGTHS, [384], [300], [1, 127, 128, 128, 10], [128, 128, 128], [5, 250]):
        row = sum(lengths)
        doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        ref = create_block_mask(lambda b, h, q, kv, doc=doc: (doc[q] == doc[kv]) & (q >= kv),
                                None, None, row, row, device="cpu")
        ours = attention.row_kwargs(lengths, "flex", CPU, max_length=1024)["block_mask"]
        assert torch.equal(ours.to_dense(), ref.to_dense()), lengths
        for field in ("kv_num_blocks", "full_kv_num_blocks", "q_num_blocks", "full_q_num_blocks"):
            assert torch.equal(getattr(ours, field), getattr(ref, field)), (lengths, field)


# --- 2, 3. no L x L tensor, no device->host sync ---------------------------------------------


def test_per_sequence_builds_no_square_tensor_and_never_syncs(base):
    model = installed(base, "per_sequence")
    row = packed(documents())
    rec = OpRecorder()
    with rec:
        kw = attention.row_kwargs(LENGTHS, "per_sequence", CPU, max_length=1024)
        _, loss = packed_loss(model, row, kw)
        loss.backward()
    assert rec.ops["_scaled_dot_product_flash_attention_for_cpu_backward"] > 0  # saw backward
    assert rec.square(ROW) == []
    assert rec.syncs() == {}


def test_flex_row_kwargs_build_no_square_tensor_and_never_sync():
    # The BlockMask is built from block-level tables; flex's own fused kernel exists only under
    # torch.compile (inductor), which a dispatch mode cannot look into: see the cuda test.
    for lengths in (LENGTHS, [ROW], [1, 127, 128, 128]):
        rec = OpRecorder()
        with rec:
            attention.row_kwargs(lengths, "flex", CPU, max_length=1024)
        assert rec.shapes and rec.square(sum(lengths)) == [] and rec.syncs() == {}


def test_detector_finds_the_dense_mask_of_stock_sdpa(base):
    """The same check on transformers' own SDPA path with a packed row does see L x L."""
    model = copy.deepcopy(base)
    row = packed(documents())
    rec = OpRecorder()
    with rec, torch.no_grad():
        model(input_ids=row["input_ids"], position_ids=row["position_ids"], use_cache=False)
    assert rec.square(ROW), "the detector should see the dense block-diagonal mask"


# --- install / row_kwargs / choose ------------------------------------------------------------


def test_install_switches_every_config_and_is_idempotent(base):
    model = copy.deepcopy(base)
    assert model.config._attn_implementation == "sdpa"
    for impl in ("flex", "per_sequence", "per_sequence"):
        attention.install(model, impl)
        name = attention.registered_name(impl)
        assert name in AttentionInterface()
        assert {m.config._attn_implementation for m in model.modules()
                if hasattr(m, "config")} == {name}


def test_forward_without_row_kwargs_is_refused(base):
    model = installed(base, "per_sequence")
    with pytest.raises(RuntimeError, match="row_kwargs"):
        model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=False)


def test_row_kwargs_shapes():
    kw = attention.row_kwargs([3, 5, 2], "varlen", CPU, max_length=8)
    assert kw["cu_seq_lens_q"].tolist() == [0, 3, 8, 10]
    assert kw["cu_seq_lens_q"].dtype == torch.int32 and kw["cu_seq_lens_k"] is kw["cu_seq_lens_q"]
    assert (kw["max_length_q"], kw["max_length_k"]) == (8, 8)
    assert attention.row_kwargs([3, 5], "per_sequence", CPU, 8) == {"doc_lengths": (3, 5)}
    with pytest.raises(ValueError, match="exceeds max_length"):
        attention.row_kwargs([3, 9], "varlen", CPU, max_length=8)
    with pytest.raises(ValueError, match="positive"):
        attention.row_kwargs([3, 0], "per_sequence", CPU, max_length=8)


def test_choose_on_cpu():
    # torch 2.13's flex_attention raises NotImplementedError for a backward on CPU, so for a
    # training job flex is not available there, compiled or not.
    flex_trains = attention.available("flex", CPU)  # False on torch 2.11 and 2.13
    assert attention.choose("auto", CPU, compiled=False) == "per_sequence"
    assert attention.choose("auto", CPU, compiled=True) == ("flex" if flex_trains
                                                            else "per_sequence")
    assert attention.choose("per_sequence", CPU, compiled=False) == "per_sequence"
    with pytest.raises(UserError, match=r"layout\.attention: 'varlen' is not available on cpu "
                                        r"\(needs a CUDA GPU.*available here: auto, per_sequence"):
        attention.choose("varlen", CPU, compiled=True)
    with pytest.raises(UserError, match=r"layout\.attention: 'dense' is not one of"):
        attention.choose("dense", CPU, compiled=False)
    if not flex_trains:
        with pytest.raises(UserError, match=r"layout\.attention: 'flex'.*no backward on cpu"):
            attention.choose("flex", CPU, compiled=True)


def test_choose_order(monkeypatch):
    """auto: varlen where available, else flex if compiled, else per_sequence."""
    usable = {"varlen", "flex", "per_sequence"}
    monkeypatch.setattr(attention, "available", lambda impl, device: impl in usable)
    gpu = torch.device("cuda")
    assert attention.choose("auto", gpu, compiled=False) == "varlen"
    usable.discard("varlen")
    assert attention.choose("auto", gpu, compiled=True) == "flex"
    assert attention.choose("auto", gpu, compiled=False) == "per_sequence"
    assert attention.choose("flex", gpu, compiled=True) == "flex"
    with pytest.raises(UserError, match=r"layout\.attention: 'flex' needs a compiled model"):
        attention.choose("flex", gpu, compiled=False)


def test_varlen_available_needs_cuda_and_ampere(monkeypatch):
    if attention._VARLEN_ATTN is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, ok in (((9, 0), True), ((8, 0), True), ((7, 5), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert attention.available("varlen", torch.device("cuda")) is ok
    assert attention.available("varlen", CPU) is False


# --- 5. varlen argument adapter, against stand-ins for the CUDA kernel --------------------------
# These fakes are NOT the kernel: each has one torch release's varlen_attn signature, checks
# what it is given, and computes the same attention with per-document SDPA on CPU.

CALLS: list[dict] = []


def _stand_in(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, scale, gqa, extra):
    assert q.dim() == 3 and k.dim() == 3 and v.shape == k.shape and q.shape[0] == k.shape[0]
    assert gqa or k.shape[1] == q.shape[1], "this signature has no GQA: heads must match"
    assert cu_q.dtype == torch.int32 and cu_q.dim() == 1 and torch.equal(cu_q, cu_k)
    bounds = cu_q.tolist()  # a stand-in may read the device; the real kernel does not
    assert bounds[0] == 0 and bounds[-1] == q.shape[0]
    spans = list(zip(bounds, bounds[1:], strict=False))
    assert isinstance(max_q, int) and max_q == max_k >= max(b - a for a, b in spans)
    CALLS.append({"q": tuple(q.shape), "k": tuple(k.shape), **extra})
    outs = [F.scaled_dot_product_attention(
        q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
        is_causal=causal, scale=scale, enable_gqa=gqa).transpose(0, 1)
        for a, b in spans]
    return torch.cat(outs)


def varlen_2_10(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False,
                return_aux=None):
    return _stand_in(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal=is_causal,
                     scale=None, gqa=False, extra={"is_causal": is_causal})


def varlen_2_11(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None,
                scale=None, window_size=(-1, -1)):
    assert window_size in ((-1, -1), (-1, 0)) and isinstance(window_size, tuple)
    return _stand_in(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                     causal=window_size == (-1, 0), scale=scale, gqa=False,
                     extra={"window_size": window_size, "scale": scale})


def varlen_is_causal_scale(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                           is_causal=False, return_aux=None, scale=None):
    return _stand_in(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal=is_causal,
                     scale=scale, gqa=False, extra={"is_causal": is_causal, "scale": scale})


def varlen_window_paged(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None,
                  scale=None, window_size=(-1, -1), seqused_k=None, block_table=None,
                  num_splits=None):
    assert window_size in ((-1, -1), (-1, 0)) and isinstance(window_size, tuple)
    return _stand_in(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                     causal=window_size == (-1, 0), scale=scale, gqa=False,
                     extra={"window_size": window_size, "scale": scale})


def varlen_2_13(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None,
                scale=None, window_size=(-1, -1), enable_gqa=False, seqused_k=None,
                block_table=None, num_splits=None):
    assert window_size in ((-1, -1), (-1, 0)) and isinstance(window_size, tuple)
    return _stand_in(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                     causal=window_size == (-1, 0), scale=scale, gqa=enable_gqa,
                     extra={"window_size": window_size, "scale": scale, "enable_gqa": enable_gqa})


# 2.10: its docs; 2.11: read on the GPU machine (torch 2.11.0+cu130); 2.13: installed here;
# the other two: main-branch snapshots between releases.
STAND_INS = [varlen_2_10, varlen_is_causal_scale, varlen_2_11, varlen_window_paged, varlen_2_13]


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def test_installed_torch_varlen_signature_is_one_of_the_stand_ins():
    if attention._VARLEN_ATTN is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    assert _params(attention._VARLEN_ATTN) in [_params(f) for f in STAND_INS]


@pytest.mark.parametrize("fake", STAND_INS, ids=lambda f: f.__name__)
def test_varlen_adapter_passes_what_each_signature_takes(fake):
    call = attention.make_varlen_call(fake)
    torch.manual_seed(0)
    q, k, v = torch.randn(30, 4, 16), torch.randn(30, 2, 16), torch.randn(30, 2, 16)
    cu = torch.tensor([0, 10, 25, 30], dtype=torch.int32)
    CALLS.clear()
    out = call(q, k, v, cu, cu, 16, 16, 0.1)  # a non-default scale (default: 1/sqrt(16))
    params = inspect.signature(fake).parameters
    seen = CALLS[-1]
    assert seen["q"] == (30, 4, 16)
    assert seen["k"] == ((30, 2, 16) if "enable_gqa" in params else (30, 4, 16))
    if "is_causal" in params:
        assert seen["is_causal"] is True
    else:
        assert seen["window_size"] == (-1, 0)
    if "scale" in params:
        assert seen["scale"] == 0.1
    if "enable_gqa" in params:
        assert seen["enable_gqa"] is True
    ref = torch.cat([F.scaled_dot_product_attention(
        q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
        is_causal=True, scale=0.1, enable_gqa=True).transpose(0, 1)
        for a, b in ((0, 10), (10, 25), (25, 30))])
    torch.testing.assert_close(out, ref)  # for 2.10's signature: scale folded into q


@pytest.mark.parametrize("fake", STAND_INS, ids=lambda f: f.__name__)
def test_varlen_model_path_with_stand_in(base, monkeypatch, fake):
    monkeypatch.setattr(attention, "_varlen_call", attention.make_varlen_call(fake))
    model = installed(base, "varlen")
    kw = attention.row_kwargs(LENGTHS, "varlen", CPU, max_length=128)
    assert_matches_reference(base, model, kw, grads=True)


# --- 6. compile -------------------------------------------------------------------------------


def _counting_backend(graphs: list, inner: str):
    def backend(gm, example_inputs):
        graphs.append(gm)
        if inner == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs)
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    return backend


# Three row lengths (multiples of 128, >= 2 blocks: one block is a size-1 specialisation), each
# with its own document split, then new splits at lengths already seen.
COMPILE_ROWS = [[100, 20, 136], [50, 60, 70, 204], [200, 100, 84, 128],
                [10, 20, 30, 196], [384], [256, 256]]


def _compiled_flex_run(base: LlamaForCausalLM, device: torch.device, inner: str, grads: bool,
                       all_layers: bool = False):
    """Flex with compiled decoder layer(s) over COMPILE_ROWS, checked against per_sequence.

    On CUDA the last step runs under ``torch.cuda.set_sync_debug_mode("error")``.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = installed(base, "flex").to(device)
    ref = installed(base, "per_sequence").to(device)
    graphs: list = []
    compiled = model.model.layers if all_layers else model.model.layers[:1]
    for layer in compiled:
        layer.compile(backend=_counting_backend(graphs, inner))
    seen = []
    for i, lengths in enumerate(COMPILE_ROWS):
        gen = torch.Generator().manual_seed(sum(lengths))
        ids = torch.randint(1, 300, (1, sum(lengths)), generator=gen).to(device)
        pos = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
        strict = device.type == "cuda" and i == len(COMPILE_ROWS) - 1
        with torch.set_grad_enabled(grads):
            if strict:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                out = model(input_ids=ids, position_ids=pos, use_cache=False,
                            **attention.row_kwargs(lengths, "flex", device, 1024)).logits
                if grads:
                    out.square().mean().backward()
            finally:
                if strict:
                    torch.cuda.set_sync_debug_mode("default")
            want = ref(input_ids=ids, position_ids=pos, use_cache=False,
                       **attention.row_kwargs(lengths, "per_sequence", device, 1024)).logits
            if grads:
                want.square().mean().backward()
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-3)
        seen.append(len(graphs))
    if grads:
        for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3 * q.grad.abs().max(),
                                       msg=lambda m, name=name: f"{name}: {m}")
    # Each compiled layer: one graph for the first length, one dynamic-shape graph after.
    assert 1 <= len(graphs) <= 2 * len(compiled) + 1, seen
    assert seen[3:] == [seen[2]] * 3, "a new split at a known length must not recompile"
    return counters


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_in_a_compiled_layer_has_no_graph_breaks_and_bounded_recompiles(base):
    # aot_eager: inductor's CPU flex kernel compiles in ~1 min; backward: none on CPU for flex.
    counters = _compiled_flex_run(base, CPU, "aot_eager", grads=False)  # <= 3 graphs
    assert not counters["graph_break"], dict(counters["graph_break"])


# --- CUDA: the real kernels ------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_varlen_kernel_matches_per_sequence(base):
    dev = torch.device("cuda")
    if not attention.available("varlen", dev):
        pytest.skip("varlen_attn not available on this GPU/torch")
    torch.manual_seed(0)
    lengths = [37, 100, 64, 23, 32]
    q = torch.randn(1, 4, 256, 16, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 2, 256, 16, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 2, 256, 16, device=dev, dtype=torch.bfloat16, requires_grad=True)
    got, _ = attention._varlen_attention(None, q, k, v, None, scaling=0.3,
                                         **attention.row_kwargs(lengths, "varlen", dev, 1024))
    want, _ = attention._per_sequence_attention(None, q.float(), k.float(), v.float(), None,
                                                scaling=0.3, doc_lengths=lengths)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)
    g = torch.autograd.grad(got.float().square().sum(), (q, k, v))
    w = torch.autograd.grad(want.square().sum(), (q, k, v))
    for a, b in zip(g, w, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)


@cuda
def test_cuda_varlen_model_step_never_syncs(base):
    dev = torch.device("cuda")
    if not attention.available("varlen", dev):
        pytest.skip("varlen_attn not available on this GPU/torch")
    model = installed(base, "varlen").to(dev, torch.bfloat16)
    ref = installed(base, "per_sequence").to(dev, torch.bfloat16)
    # The embedding's CUDA backward is not ours to judge (it may read a count back): frozen.
    for m in (model, ref):
        m.model.embed_tokens.weight.requires_grad_(False)
    row = {k: t.to(dev) for k, t in packed(documents()).items()}

    def step(m, impl):
        _, loss = packed_loss(m, row, attention.row_kwargs(LENGTHS, impl, dev, 1024))
        loss.backward()
        return loss

    step(model, "varlen")  # warm-up: first-use allocations and handles may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step(model, "varlen")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(loss.float(), step(ref, "per_sequence").float(), rtol=2e-2, atol=0)


@cuda
def test_cuda_flex_compiled_with_inductor(base):
    # Every layer compiled (no eager flex left), forward and backward, last step sync-checked.
    counters = _compiled_flex_run(base, torch.device("cuda"), "inductor", grads=True,
                                  all_layers=True)  # seen on an H200: 2 graphs per layer
    assert not counters["graph_break"], dict(counters["graph_break"])
