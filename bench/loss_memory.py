"""Peak memory (and time) of the loss, forward + backward: naive full-logits path vs the fused
chunked linear cross-entropy (alpaca_jobs.train.loss).

    python bench/loss_memory.py                  # CUDA: one 7B-recipe row; CPU: a smaller shape
    python bench/loss_memory.py --n 4096 --chunk 1024

Naive = what the loop did: ``logits = hidden @ W.T`` (compute dtype), ``.float()``,
``cross_entropy(..., reduction="sum")``, backward. Ours = ``linear_cross_entropy_sum``.
Both start from the same leaf ``hidden`` (N, d) and ``weight`` (V, d) and end after backward
with ``hidden.grad`` and ``weight.grad`` filled; the inputs are not counted, the gradients are.

What "peak" means:
- CUDA (default N=8192, d=4096, V=32000, bf16: one 7B-recipe row of target tokens):
  ``torch.cuda.max_memory_allocated()`` minus the allocation before the run, i.e. the high-water
  mark of the caching allocator's *allocated* bytes (cuBLAS workspaces included, reserved-but-free
  cache excluded). Median of 3 runs after a warm-up; time is fwd+bwd by CUDA events, median of 3.
- CPU (default N=2048, d=512, V=32000, fp32): the high-water mark of live tensor bytes created
  by aten ops during forward+backward, tracked by a TorchDispatchMode that registers each output's
  storage (unless it aliases an argument: views, in-place results) and drops it when the storage
  object is freed (storages keep their Python object alive, so tensors kept only by autograd
  for backward are still counted). It does not see scratch memory a kernel
  allocates internally without returning it, nor allocator overhead; memory is deterministic, so
  one tracked run each, also timed by wall clock (indicative only: no warm-up, shared cores).
Only stable APIs (torch >= 2.6), so the same script runs on the GPU boxes' torch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpaca_jobs.train.loss import linear_cross_entropy_sum  # noqa: E402

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def naive(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, chunk: int) -> torch.Tensor:
    return F.cross_entropy((h @ w.T).float(), t, reduction="sum")


def fused(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, chunk: int) -> torch.Tensor:
    return linear_cross_entropy_sum(h, w, t, chunk_tokens=chunk)


def make_inputs(n: int, d: int, v: int, dtype: torch.dtype, device: str) -> Inputs:
    g = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(n, d, generator=g, device=device).to(dtype).requires_grad_()
    w = (torch.randn(v, d, generator=g, device=device) * d**-0.5).to(dtype).requires_grad_()
    t = torch.randint(0, v, (n,), generator=g, device=device)
    return h, w, t


def step(fn: Callable, x: Inputs, chunk: int) -> None:
    """One forward + backward from fresh gradients."""
    h, w, t = x
    h.grad = w.grad = None
    fn(h, w, t, chunk).backward()


def _tensors(items: list | tuple) -> list[torch.Tensor]:
    out = []
    for x in items:
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, (list, tuple)):
            out.extend(_tensors(x))
    return out


class LiveBytes(TorchDispatchMode):
    """High-water mark of bytes in storages created by aten ops while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views and in-place results alias an argument's storage: not a new allocation.
        seen = {t.untyped_storage().data_ptr() for t in _tensors([*args, *kwargs.values()])}
        for o in _tensors(out if isinstance(out, (tuple, list)) else [out]):
            if o.untyped_storage().data_ptr() not in seen:
                self._track(o.untyped_storage())
        self.peak = max(self.peak, self.now)
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)  # the storage's Python object is unique and lives as long as it does
        if key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.now += storage.nbytes()
        weakref.finalize(storage, self._free, key)


def measure_cpu(fn: Callable, x: Inputs, chunk: int) -> tuple[int, float]:
    x[0].grad = x[1].grad = None  # the inputs predate the mode, so they are not counted
    start = time.perf_counter()
    with LiveBytes() as tracker:  # a few dozen ops: the mode's overhead is noise next to GEMMs
        step(fn, x, chunk)
    return tracker.peak, time.perf_counter() - start


def measure_cuda(fn: Callable, x: Inputs, chunk: int, repeats: int) -> tuple[int, float]:
    step(fn, x, chunk)  # warm-up: cuBLAS handles, allocator blocks
    peaks, times = [], []
    for _ in range(repeats):
        x[0].grad = x[1].grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        step(fn, x, chunk)
        end.record()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
        times.append(begin.elapsed_time(end) / 1e3)
    return int(statistics.median(peaks)), statistics.median(times)


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8192 if cuda else 2048, help="target tokens")
    ap.add_argument("--d", type=int, default=4096 if cuda else 512, help="hidden size")
    ap.add_argument("--v", type=int, default=32000, help="vocabulary")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16" if cuda else "fp32")
    # Default chunks keep the GPU row's N / chunk = 2 on the CPU's smaller N.
    ap.add_argument("--chunk", type=int, default=4096 if cuda else 1024, help="fused chunk_tokens")
    ap.add_argument("--also-chunk", type=int, nargs="*", default=[1024 if cuda else 256],
                    help="more chunk sizes to report")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    device = "cuda" if cuda else "cpu"
    x = make_inputs(a.n, a.d, a.v, dtype, device)
    where = torch.cuda.get_device_name() if cuda else "cpu (live-tensor-bytes tracker)"
    print(f"{where}, torch {torch.__version__}: N={a.n} d={a.d} V={a.v} {a.dtype}")
    print(f"N x V fp32 logits alone: {a.n * a.v * 4 / 2**20:.0f} MiB")

    def measure(fn: Callable, chunk: int) -> tuple[int, float]:
        return measure_cuda(fn, x, chunk, a.repeats) if cuda else measure_cpu(fn, x, chunk)

    chunks = [a.chunk] + [c for c in a.also_chunk if c != a.chunk]
    rows = [("naive (full logits)", naive, 0)] + [(f"fused chunk={c}", fused, c) for c in chunks]
    peaks = []
    for name, fn, chunk in rows:
        peak, seconds = measure(fn, chunk)
        peaks.append(peak)
        print(f"{name:22s} peak {peak / 2**20:9.1f} MiB   fwd+bwd {seconds * 1e3:9.1f} ms")
    print(f"peak naive / ours: {peaks[0] / peaks[1]:.2f}x  (ours = chunk {a.chunk})")


if __name__ == "__main__":
    main()
