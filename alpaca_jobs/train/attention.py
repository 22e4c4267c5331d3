"""Attention for packed rows without a dense L x L mask.

The training loop packs several examples ("documents") into one row whose ``position_ids``
restart at 0 for each document. Left to itself, transformers' SDPA path detects the restarts
and builds a dense block-diagonal L x L mask from them: quadratic memory in the row length,
slow to build, and a mask rules out SDPA's flash kernels. Here we register our own attention
functions with transformers' ``AttentionInterface`` instead. For a name that is not in
``ALL_MASK_ATTENTION_FUNCTIONS`` transformers builds no mask at all (``attention_mask=None``),
and the extra keyword arguments given to ``model(...)`` reach the attention function, so each
row carries its document boundaries in a compact form (``row_kwargs``):

- ``varlen``: PyTorch's ``varlen_attn`` (FlashAttention over cumulative sequence lengths), CUDA;
- ``flex``: ``flex_attention`` with a block-sparse causal-within-document ``BlockMask``, for
  compiled models (uncompiled flex runs an unfused reference that materialises the scores);
  needs a backward on the device, which torch 2.13 has on CUDA but not on CPU;
- ``per_sequence``: one causal SDPA call per document, the portable default (no compile needed).

Everything a row needs is built on the host from Python ints and copied to the device without
waiting for it: no device->host sync per step.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F

from alpaca_jobs.common.errors import UserError

IMPLEMENTATIONS = ("varlen", "flex", "per_sequence")
LAYOUT_FIELD = "layout.attention"
# flex_attention's sparse block size; rows are padded to a multiple of 128 anyway.
FLEX_BLOCK = 128


def registered_name(impl: str) -> str:
    """The name under which ``impl`` is registered with transformers' AttentionInterface."""
    return f"alpaca_{impl}"


# --- optional kernels --------------------------------------------------------------------


def _import_varlen() -> Callable[..., torch.Tensor] | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        return None
    return varlen_attn


def _import_flex() -> tuple[Callable[..., Any], type] | None:
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except ImportError:
        return None
    return flex_attention, BlockMask


def make_varlen_call(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Adapt ``varlen_attn`` to one calling convention, whatever its torch version.

    Its signature moved between releases: 2.10 takes ``is_causal`` and has no ``scale``; 2.11
    (seen on the GPU machine) takes keyword-only ``scale`` and ``window_size`` ((-1, 0) is
    causal) but no ``enable_gqa``; 2.12+ adds ``enable_gqa``. Some main-branch snapshots had
    ``is_causal`` with ``scale``. We read the signature once; the returned call does not branch
    on it. Without ``scale`` the factor is folded into q; without ``enable_gqa`` k/v are
    repeated to q's head count.
    """
    params = inspect.signature(fn).parameters
    if "is_causal" in params:
        causal: dict[str, Any] = {"is_causal": True}
    elif "window_size" in params:
        # Must be this exact tuple: varlen_attn compares window_size == (-1, 0).
        causal = {"window_size": (-1, 0)}
    else:
        raise RuntimeError(f"varlen_attn{inspect.signature(fn)} has no causal option")
    has_scale = "scale" in params
    has_gqa = "enable_gqa" in params

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor,
             cu_k: torch.Tensor, max_q: int, max_k: int, scale: float | None) -> torch.Tensor:
        """q: (T, H, D); k, v: (T, H_kv, D); returns (T, H, D)."""
        kwargs = dict(causal)
        if has_scale:
            kwargs["scale"] = scale
        elif scale is not None and not math.isclose(scale * math.sqrt(q.shape[-1]), 1.0):
            # No scale argument: the kernel uses 1/sqrt(D), so fold the difference into q.
            q = q * (scale * math.sqrt(q.shape[-1]))
        if k.shape[1] != q.shape[1]:
            if has_gqa:
                kwargs["enable_gqa"] = True
            else:
                groups = q.shape[1] // k.shape[1]
                k = k.repeat_interleave(groups, dim=1)
                v = v.repeat_interleave(groups, dim=1)
        return fn(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs)

    return call


_VARLEN_ATTN = _import_varlen()
_FLEX = _import_flex()
# Module globals, looked up at call time, so a test can stand a fake in for the CUDA kernel.
_varlen_call = make_varlen_call(_VARLEN_ATTN) if _VARLEN_ATTN is not None else None


# --- choosing ----------------------------------------------------------------------------


def available(impl: str, device: torch.device) -> bool:
    """Whether ``impl`` can run on ``device`` with this torch build."""
    device = torch.device(device)
    if impl == "varlen":
        # FlashAttention kernels: CUDA only, Ampere or newer.
        return (_VARLEN_ATTN is not None and device.type == "cuda"
                and torch.cuda.is_available()
                and torch.cuda.get_device_capability(device)[0] >= 8)
    if impl == "flex":
        return _FLEX is not None and _flex_trains_on(device.type)
    if impl == "per_sequence":
        return True
    raise ValueError(f"unknown attention implementation {impl!r}")


@functools.cache
def _flex_trains_on(device_type: str) -> bool:
    """Whether flex_attention has a backward on this device type.

    torch 2.13 refuses it on CPU (and MPS) when an input requires grad; training needs it. The
    check is torch's own, made before any computation, so a tiny call answers it.
    """
    if device_type == "cuda":
        return True
    query = torch.zeros(1, 1, 16, 16, device=device_type, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FLEX[0](query, query, query)
    except NotImplementedError:
        return False
    return True


def _unavailable_reason(impl: str, device: torch.device) -> str:
    if impl == "varlen":
        return "needs a CUDA GPU (Ampere or newer) and torch>=2.10"
    if _FLEX is None:
        return "needs torch.nn.attention.flex_attention"
    return f"flex_attention has no backward on {device.type} in torch {torch.__version__}"


def choose(requested: str, device: torch.device, compiled: bool) -> str:
    """Resolve ``layout.attention`` ("auto" or an implementation) for this device.

    auto: varlen on CUDA where PyTorch has it; else flex when the model is compiled; else
    per_sequence. An explicit choice must be available, and flex also needs ``compiled``:
    uncompiled flex_attention is an unfused reference that materialises the L x L scores.
    per_sequence is for uncompiled models (compiled, it recompiles per number of documents).
    """
    device = torch.device(device)
    if requested not in ("auto", *IMPLEMENTATIONS):
        raise UserError(f"{LAYOUT_FIELD}: {requested!r} is not one of "
                        f"{', '.join(('auto', *IMPLEMENTATIONS))}")
    if requested == "auto":
        if available("varlen", device):
            return "varlen"
        if compiled and available("flex", device):
            return "flex"
        return "per_sequence"
    if not available(requested, device):
        here = [impl for impl in IMPLEMENTATIONS if available(impl, device)]
        raise UserError(f"{LAYOUT_FIELD}: {requested!r} is not available on {device} "
                        f"({_unavailable_reason(requested, device)}); "
                        f"available here: auto, {', '.join(here)}")
    if requested == "flex" and not compiled:
        raise UserError(f"{LAYOUT_FIELD}: 'flex' needs a compiled model (uncompiled, "
                        "flex_attention materialises the L x L scores); use per_sequence or auto")
    return requested


# --- the attention functions (transformers' AttentionInterface signature) ------------------
# query: (B, H, L, D), key/value: (B, H_kv, L, D), after RoPE. Return ((B, L, H, D), None).


def _missing(impl: str, what: str) -> RuntimeError:
    return RuntimeError(f"attention {registered_name(impl)!r} needs {what} in model(...): "
                        f"pass **row_kwargs(doc_lengths, {impl!r}, ...) with each packed row")


def _varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None, *,
                      scaling: float | None = None, dropout: float = 0.0,
                      cu_seq_lens_q: torch.Tensor | None = None,
                      cu_seq_lens_k: torch.Tensor | None = None,
                      max_length_q: int | None = None, max_length_k: int | None = None,
                      **_: Any) -> tuple[torch.Tensor, None]:
    if cu_seq_lens_q is None or cu_seq_lens_k is None or max_length_q is None:
        raise _missing("varlen", "cu_seq_lens_q/cu_seq_lens_k/max_length_q/max_length_k")
    if dropout:
        raise ValueError("varlen attention has no dropout; set attention_dropout=0")
    if query.shape[0] != 1:
        raise ValueError(f"packed rows have batch size 1, got {query.shape[0]}")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (L, H, D): tokens first
    out = _varlen_call(q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q,
                       max_length_k if max_length_k is not None else max_length_q, scaling)
    return out.unsqueeze(0), None


def _flex_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: torch.Tensor | None, *,
                    scaling: float | None = None, dropout: float = 0.0,
                    block_mask: Any = None, **_: Any) -> tuple[torch.Tensor, None]:
    if block_mask is None:
        raise _missing("flex", "block_mask")
    if dropout:
        raise ValueError("flex attention has no dropout; set attention_dropout=0")
    flex_attention, _block_mask_type = _FLEX
    out = flex_attention(query, key, value, block_mask=block_mask, scale=scaling,
                         enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _per_sequence_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, attention_mask: torch.Tensor | None, *,
                            scaling: float | None = None, dropout: float = 0.0,
                            doc_lengths: Sequence[int] | None = None,
                            **_: Any) -> tuple[torch.Tensor, None]:
    if doc_lengths is None:
        raise _missing("per_sequence", "doc_lengths")
    gqa = key.shape[1] != query.shape[1]
    # Python ints: splitting needs no sync, and each SDPA call is causal over one document only.
    # split, not one slice per document: a slice's backward writes its gradient into a zeroed
    # copy of the whole row (documents x row memory traffic); split's backward is one cat.
    sizes = [int(n) for n in doc_lengths]
    outs = [F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                           enable_gqa=gqa)
            for q, k, v in zip(query.split(sizes, dim=2), key.split(sizes, dim=2),
                               value.split(sizes, dim=2), strict=True)]
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return out.transpose(1, 2).contiguous(), None


_FUNCTIONS: dict[str, Callable[..., tuple[torch.Tensor, None]]] = {
    "varlen": _varlen_attention,
    "flex": _flex_attention,
    "per_sequence": _per_sequence_attention,
}


# --- installing ---------------------------------------------------------------------------


def register() -> None:
    """Register every implementation with transformers (idempotent: same name, same function)."""
    from transformers import AttentionInterface

    for impl, fn in _FUNCTIONS.items():
        AttentionInterface.register(registered_name(impl), fn)


def install(model: torch.nn.Module, impl: str) -> None:
    """Switch ``model`` (and its sub-models) to our ``impl`` (tested from a model loaded with sdpa).

    Afterwards every forward needs ``**row_kwargs(...)`` and ``use_cache=False``; an
    ``attention_mask`` is dropped by transformers (no mask is built for an unregistered name).
    To go back (e.g. for generation): ``model.set_attn_implementation("sdpa")``.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {impl!r}")
    register()
    name = registered_name(impl)
    # Not a PreTrainedModel, or a transformers that refuses custom names: set it below.
    with contextlib.suppress(AttributeError, ValueError, KeyError):
        model.set_attn_implementation(name)
    for config in _configs(model):
        if config._attn_implementation != name:
            config._attn_implementation = name  # the setter also updates sub-configs
    wrong = [type(c).__name__ for c in _configs(model) if c._attn_implementation != name]
    if wrong:
        raise RuntimeError(f"could not set attention {name!r} on {', '.join(wrong)}")


def _configs(model: torch.nn.Module) -> list[Any]:
    """Each distinct transformers config held by the model's modules (shared ones once)."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


# --- per-row arguments ----------------------------------------------------------------------


def row_kwargs(doc_lengths: list[int], impl: str, device: torch.device,
               max_length: int) -> dict[str, Any]:
    """Extra ``model(...)`` kwargs for one packed row whose documents have these lengths.

    ``doc_lengths`` sums to the row length, trailing padding counted as one more document.
    ``max_length`` bounds every document length (varlen's max_q/max_k): a fixed bound rather
    than the true maximum, so a compiled model sees the same int every step. An upper bound
    is valid for FlashAttention: it only sizes the launch grid, and blocks past a document's
    end exit early. Built from Python ints; host->device copies are non-blocking.
    """
    lengths = [int(n) for n in doc_lengths]
    if not lengths or min(lengths) <= 0:
        raise ValueError(f"documents must have positive lengths, got {doc_lengths}")
    device = torch.device(device)
    if impl == "per_sequence":
        return {"doc_lengths": tuple(lengths)}
    if impl == "varlen":
        if max(lengths) > max_length:
            raise ValueError(f"a document of {max(lengths)} tokens exceeds max_length={max_length}")
        cu = _to_device(torch.tensor([0, *accumulate(lengths)], dtype=torch.int32), device)
        return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                "max_length_q": max_length, "max_length_k": max_length}
    if impl == "flex":
        return {"block_mask": document_block_mask(lengths, device)}
    raise ValueError(f"unknown attention implementation {impl!r}")


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a fresh CPU tensor to ``device`` without making the host wait for the GPU.

    A pageable copy makes the host wait for the stream to drain; from pinned memory a
    non_blocking copy is queued (the caching host allocator keeps the buffer alive until done).
    """
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def document_block_mask(doc_lengths: Sequence[int], device: torch.device) -> Any:
    """Causal-within-document ``BlockMask`` for one row, without any L x L tensor.

    ``create_block_mask`` would evaluate the mask on all L x L positions. Documents are
    contiguous, so a (q-block, kv-block) tile is decided by the first and last document id in
    each block: it is empty unless the kv block's last document is the q block's first (or it
    is the diagonal), and full when both blocks lie in one and the same document, below the
    diagonal (and not a ragged last block). Only the (L/128)^2 block table is built, on the host;
    the result equals ``create_block_mask``'s for the same mask_mod (tested).
    """
    if _FLEX is None:
        raise RuntimeError("flex_attention is not available in this torch")
    _flex_attention_fn, block_mask_type = _FLEX
    device = torch.device(device)
    row = sum(doc_lengths)
    n_blocks = -(-row // FLEX_BLOCK)
    starts = [b * FLEX_BLOCK for b in range(n_blocks)]
    lasts = [min(s + FLEX_BLOCK, row) - 1 for s in starts]
    doc_of = _doc_index(doc_lengths)
    first = torch.tensor([doc_of(s) for s in starts])
    last = torch.tensor([doc_of(s) for s in lasts])

    qb = torch.arange(n_blocks)[:, None]
    kb = torch.arange(n_blocks)[None, :]
    # Documents are in order, so for kb < qb: last[kb] <= first[qb]; they meet iff equal.
    any_visible = (kb <= qb) & (last[None, :] >= first[:, None])
    # A ragged last block is never full (as create_block_mask decides: its padding is masked).
    complete = torch.tensor([last_pos - start + 1 == FLEX_BLOCK
                             for start, last_pos in zip(starts, lasts, strict=True)])
    one_doc = (first == last) & complete
    full = (kb < qb) & one_doc[:, None] & one_doc[None, :] & (first[None, :] == first[:, None])
    partial = any_visible & ~full

    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    doc_ids = torch.repeat_interleave(torch.arange(len(doc_lengths), dtype=torch.int32),
                                      torch.tensor(list(doc_lengths)))
    kv_num, kv_idx, full_num, full_idx, doc_ids = (
        _to_device(t, device) for t in (kv_num, kv_idx, full_num, full_idx, doc_ids))
    # Given device tensors, the q-side tables are derived on the device (no sync).
    return block_mask_type.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=FLEX_BLOCK,
        mask_mod=_document_causal(doc_ids), seq_lengths=(row, row))


def _doc_index(doc_lengths: Sequence[int]) -> Callable[[int], int]:
    """Position -> index of the document holding it."""
    ends = list(accumulate(doc_lengths))
    return lambda pos: bisect.bisect_right(ends, pos)


def _ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, n) bool block table -> BlockMask's (1, 1, n) counts and (1, 1, n, n) indices."""
    dense = dense.to(torch.int32)
    counts = dense.sum(dim=-1).to(torch.int32)
    # Stable descending sort puts the listed block indices first, in increasing order.
    indices = torch.argsort(dense, dim=-1, descending=True, stable=True).to(torch.int32)
    return counts[None, None].contiguous(), indices[None, None].contiguous()


def _document_causal(doc_ids: torch.Tensor) -> Callable[..., torch.Tensor]:
    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                 kv_idx: torch.Tensor) -> torch.Tensor:
        return (doc_ids[q_idx] == doc_ids[kv_idx]) & (q_idx >= kv_idx)

    return mask_mod
