"""Fused, chunked linear cross-entropy: the loss from final hidden states without a full logits tensor.

Why: for a 7B Llama row of 8192 target tokens the naive path (``lm_head`` -> bf16 logits ->
``.float()`` -> ``cross_entropy``) materialises N x V logits several times over (bf16 logits,
their fp32 copy, the saved log-softmax, and in backward its gradient): gigabytes that exist only
to be reduced to one number per row. Here the rows are walked in chunks; each chunk's fp32 logits
are turned into the loss *and*, in the same pass, into the gradients (softmax minus one-hot is
d loss / d logits), so nothing is recomputed in backward and no N x V tensor ever exists. This is
the idea behind Liger-Kernel's "fused linear cross entropy", in plain PyTorch ops.

The price: the gradients are computed in forward even if backward never runs (use
``torch.no_grad()`` for evaluation: then only the loss is computed), and the buffers for
d loss / d hidden (N x d) and d loss / d weight (V x d, fp32) live from forward to backward.

Host-sync free by construction: no ``.item()``, no boolean masks, no branches on tensor values;
the only Python decisions are on shapes, dtypes and ``chunk_tokens``. The caller picks the target
rows on the host (``target_positions``) and gathers them with an integer index.
"""

from __future__ import annotations

import torch

from alpaca_jobs.train.data import IGNORE_INDEX


def target_positions(labels: list[int]) -> tuple[list[int], list[int]]:
    """Positions whose next label is a target, and those labels (pure Python, no device work).

    The hidden state at position ``p`` predicts token ``p + 1``, so ``p`` (in ``0..L-2``) is
    kept when ``labels[p + 1] != IGNORE_INDEX``. For a packed row this is exactly the set of
    rows the shifted ``cross_entropy(logits[:-1], labels[1:], ignore_index=-100)`` would count.
    """
    positions: list[int] = []
    targets: list[int] = []
    for p, nxt in enumerate(labels[1:]):
        if nxt != IGNORE_INDEX:
            positions.append(p)
            targets.append(nxt)
    return positions, targets


def _chunk_forward(
    h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sum of one chunk and its d loss / d logits (softmax - onehot, fp32, in place)."""
    logits = (h @ weight.T).float()  # (c, V) fp32: the only chunk-sized fp32 buffer
    # log-sum-exp by hand, in place, so no second (c, V) temporary is made.
    row_max = logits.amax(dim=1, keepdim=True)
    logits.sub_(row_max)
    target_logit = logits.gather(1, t.unsqueeze(1))  # shifted by row_max, like the lse below
    logits.exp_()
    denom = logits.sum(dim=1, keepdim=True)
    loss = (denom.log() - target_logit).sum()
    logits.div_(denom)  # softmax
    minus_one = torch.full_like(target_logit, -1.0)
    logits.scatter_add_(1, t.unsqueeze(1), minus_one)  # softmax - onehot(target)
    return loss, logits


def _accumulate_grad_weight(grad_weight: torch.Tensor, p: torch.Tensor, h: torch.Tensor) -> None:
    """grad_weight (V, d, fp32) += p.T @ h, in the compute dtype's matmul."""
    if p.dtype == torch.float32:
        grad_weight.addmm_(p.T, h)
    else:  # bf16/fp16 GEMM (fp32 accumulate inside), then an fp32 sum across chunks
        grad_weight.add_(p.T @ h)


class _LinearCrossEntropySum(torch.autograd.Function):
    """Forward computes the loss and both gradients; backward only scales them."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_tokens: int,
        need_grad_hidden: bool,
        need_grad_weight: bool,
    ) -> torch.Tensor:
        n, d = hidden.shape
        dtype, device = weight.dtype, hidden.device
        loss = torch.zeros((), dtype=torch.float32, device=device)
        grad_hidden = torch.empty((n, d), dtype=dtype, device=device) if need_grad_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=device)
            if need_grad_weight
            else None
        )
        with torch.autocast(device_type=device.type, enabled=False):
            for start in range(0, n, chunk_tokens):
                stop = min(start + chunk_tokens, n)
                h = hidden[start:stop].to(dtype)
                chunk_loss, p32 = _chunk_forward(h, weight, targets[start:stop])
                loss.add_(chunk_loss)
                if grad_hidden is None and grad_weight is None:
                    del p32
                    continue
                p = p32.to(dtype)
                del p32  # on bf16 the fp32 buffer can go before the two GEMMs
                if grad_hidden is not None:
                    torch.mm(p, weight, out=grad_hidden[start:stop])
                if grad_weight is not None:
                    _accumulate_grad_weight(grad_weight, p, h)
                del p  # free this chunk's buffer before the next chunk allocates its own
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.consumed = False
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        if ctx.consumed:  # the fp32 weight buffer was scaled in place below
            raise RuntimeError("linear_cross_entropy_sum supports one backward per forward")
        ctx.consumed = True
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        gh = gw = None
        if grad_hidden is not None and ctx.needs_input_grad[0]:
            # Scale in fp32 (N x d is small): a bf16 multiply would round grad_output first.
            gh = (grad_hidden.float() * grad_output).to(hidden_dtype)
        if grad_weight is not None and ctx.needs_input_grad[1]:
            # In place: a V x d fp32 temporary (500 MiB on the 7B) would set the peak.
            gw = grad_weight.mul_(grad_output).to(weight_dtype)
        return gh, gw, None, None, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Sum over rows of ``cross_entropy(hidden @ weight.T, targets)``, as an fp32 scalar.

    ``hidden`` (N, d) and ``weight`` (V, d, the lm_head weight) in the compute dtype (bf16 on
    GPU, fp32 on CPU); ``targets`` (N,) int64 in ``[0, V)`` (not checked: that would need a host
    sync; an out-of-range target is a device-side assert on CUDA). Differentiable w.r.t.
    ``hidden`` and ``weight``; N == 0 gives a zero that still backpropagates (zero gradients).
    If ``hidden``'s dtype differs from ``weight``'s, the matmuls run in ``weight``'s dtype and the
    gradient is cast back. Autocast is switched off inside: the dtypes you pass are the ones used.

    Choosing ``chunk_tokens``: the transient memory is one chunk of logits, ``chunk_tokens x V``
    fp32 (4 bytes; on bf16 briefly plus a bf16 copy, so ~6 bytes) -- 4096 x 32000 x 4 = 524 MB on
    the 7B's vocabulary -- on top of the gradient buffers that live from forward to backward:
    N x d in the compute dtype and V x d in fp32 (524 MB for the 7B's lm_head), plus on bf16 a
    V x d bf16 product per chunk. Smaller chunks save memory but make the GEMMs thinner and add
    one V x d fp32 accumulate per chunk. Measured on an H200 (bench/loss_memory.py, N=8192,
    d=4096, V=32000, bf16, fwd+bwd): naive 3000 MiB / 11.3 ms; chunk 4096: 1314 MiB / 13.8 ms;
    2048: 939 MiB / 15.1 ms; 1024: 878 MiB / 17.6 ms. Below ~2048 the V x d buffers dominate.
    The result does not depend on the chunk size beyond float rounding.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}: want (N, d), (V, d)")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)}: want ({hidden.shape[0]},)")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    grad_on = torch.is_grad_enabled()
    targets = targets.to(device=hidden.device, dtype=torch.long)
    return _LinearCrossEntropySum.apply(
        hidden,
        weight,
        targets,
        chunk_tokens,
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
    )
