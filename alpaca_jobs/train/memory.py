"""Will the model fit? Memory per GPU of a training layout, checked before anything is
submitted (the train kind's preflight, so `submit --dry-run` refuses too). No torch here.

    states      = parameters x 16 B / shard size     fp32 master weights 4 + fp32 gradients 4
                                                      + AdamW's two fp32 moments 8 (fsdp.py keeps
                                                      fp32 masters; bf16 is only the compute copy)
    working set = 2 layers x layer params x 2 B      the all-gathered bf16 layer and the next one
                                                      (prefetch), + 1 layer's fp32 gradients x 4 B
    activations = T x L x 34 d x (B / 2)             T = train.tokens_per_micro_step, L layers,
                                                      d width, B bytes per activation (bf16: 2);
                                                      34 d per token and layer: Korthikanti et al.
                                                      2022, "Reducing Activation Recomputation in
                                                      Large Transformer Models", section 4.1, whose
                                                      5 a s term flash attention does not store
        checkpointed: T x L x 2 d x (B / 2) + T x 34 d x (B / 2)   (each layer's input, and one
                                                      layer recomputed at a time)
    total       = states + working set + activations + reserve (10 % of the GPU: CUDA context,
                  NCCL buffers, allocator fragmentation)

Shard size: every rank (``full``), or a node's GPUs (``hybrid``, which replicates across
nodes: each node holds the whole model's states).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError

STATE_BYTES = 16
ACTIVATION_FACTOR = 34  # x width, bytes per token per layer in bf16
CHECKPOINT_FACTOR = 2  # x width: a checkpointed layer keeps only its bf16 input
RESERVE = 0.10
GIB = 1024**3


@dataclass(frozen=True)
class Shape:
    params: float
    layers: int
    hidden: int
    vocab: int = 32000

    @property
    def layer_params(self) -> float:
        return (self.params - 2 * self.vocab * self.hidden) / self.layers


# LLaMA paper (Touvron et al. 2023), table 2: parameters, layers, width; vocabulary 32000.
LLAMA = {
    "llama-7b": Shape(6.74e9, 32, 4096),
    "llama-13b": Shape(13.0e9, 40, 5120),
    "llama-65b": Shape(65.2e9, 80, 8192),
}
# GPU memory by price-table GPU type (NVIDIA datasheets), in GB as sold (10^9 bytes).
GPU_MEMORY_GB = {"a100-80gb": 80, "a100-40gb": 40, "h100-80gb": 80, "h100": 80, "h200": 141}


def shape_from_config(path: Path) -> Shape | None:
    """A Hugging Face config.json's shape (LLaMA-style: tied or untied embeddings)."""
    try:
        c = json.loads(path.read_text())
        d, n, v, ff = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"]), int(c["intermediate_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kv = d * int(c.get("num_key_value_heads", c.get("num_attention_heads", 1))) // int(c.get("num_attention_heads", 1))
    layer = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d
    embeddings = v * d * (1 if c.get("tie_word_embeddings") else 2)
    return Shape(n * layer + embeddings + d, n, d, v)


def model_shape(train: Any) -> Shape | None:
    """``train.model_shape`` where set, else the base model's config.json where readable here."""
    if getattr(train, "model_shape", None):
        return LLAMA[train.model_shape]
    config = Path(train.base_model) / "config.json"
    return shape_from_config(config) if config.is_file() else None


@dataclass(frozen=True)
class Fit:
    states: float
    working: float
    activations: float
    reserve: float
    limit: float
    shard: int
    sharding: str

    @property
    def total(self) -> float:
        return self.states + self.working + self.activations + self.reserve

    @property
    def fits(self) -> bool:
        return self.total <= self.limit


def fit(shape: Shape, *, nodes: int, per_node: int, sharding: str, tokens: int, checkpointing: bool,
        bf16: bool, gpu_gb: float) -> Fit:
    from alpaca_jobs.train.mesh import resolve_sharding

    sharding = resolve_sharding(sharding, nodes)
    shard = per_node if sharding == "hybrid" else nodes * per_node
    act_bytes = 2 if bf16 else 4
    scale = act_bytes / 2
    per_layer = tokens * ACTIVATION_FACTOR * shape.hidden * scale
    if checkpointing:
        activations = tokens * shape.layers * CHECKPOINT_FACTOR * shape.hidden * scale + per_layer
    else:
        activations = per_layer * shape.layers
    working = 2 * shape.layer_params * act_bytes + shape.layer_params * 4
    limit = gpu_gb * 1e9
    return Fit(shape.params * STATE_BYTES / shard, working, activations, RESERVE * limit, limit, shard, sharding)


def check_memory(loaded: Any) -> Fit | None:
    """Refuse a GPU layout that cannot hold the model, in one line naming the figure and the
    limit; None where there is nothing to check (CPU runs, a model whose shape is unknown here)."""
    spec = loaded.spec
    res = spec.resources
    if not res.gpus_per_node or not res.gpu_type:
        return None
    gpu_gb = GPU_MEMORY_GB.get(res.gpu_type.lower())
    shape = model_shape(spec.train)
    if gpu_gb is None or shape is None:
        return None
    fsdp = loaded.layout.fsdp_config
    f = fit(shape, nodes=res.nodes, per_node=res.procs_per_node, sharding=fsdp.sharding,
            tokens=spec.train.tokens_per_micro_step, checkpointing=fsdp.fsdp_activation_checkpointing,
            bf16=loaded.layout.mixed_precision == "bf16", gpu_gb=gpu_gb)
    if not f.fits:
        hint = ("sharding: full" if f.sharding == "hybrid" else "more nodes") + (
            "" if fsdp.fsdp_activation_checkpointing else ", fsdp_activation_checkpointing: true") + (
            ", or a smaller train.tokens_per_micro_step")
        raise UserError(
            f"{loaded.path}: {shape.params / 1e9:.1f}B parameters on {res.nodes} x {res.procs_per_node} "
            f"{res.gpu_type}, {f.sharding} shard over {f.shard}: {f.total / GIB:.0f} GiB per GPU "
            f"(states {f.states / GIB:.0f}, activations {f.activations / GIB:.0f} at "
            f"{spec.train.tokens_per_micro_step} tokens, working set {f.working / GIB:.0f}, reserve "
            f"{f.reserve / GIB:.0f}) > {f.limit / GIB:.0f} GiB; use {hint} (train/memory.py)")
    return f
