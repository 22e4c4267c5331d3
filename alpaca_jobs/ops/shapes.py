"""Model shapes the cost estimate (``ops/estimate.py``) and the memory check before launch
(``train/memory.py``) work from: LLaMA's published sizes, and the shape of any Llama-style
Hugging Face ``config.json`` (the keys transformers' ``LlamaConfig`` writes).

LLaMA (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language Models", table 2):
parameters, width, heads and layers as published; the SwiGLU width is the paper's "2/3 4d"
rounded up to a multiple of 256 as the released code does (``multiple_of=256``: 11008, 13824,
22016); vocabulary 32000; input and output embeddings not tied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    name: str
    params: float  # all parameters, embeddings included
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False  # the output layer shares the input embedding

    @property
    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    @property
    def layer_params(self) -> int:
        """One decoder layer: q and o (d x d), k and v (d x kv), the gated MLP (3 d x i), two norms."""
        d = self.hidden
        return 2 * d * d + 2 * d * self.kv_dim + 3 * d * self.intermediate + 2 * d

    @property
    def root_params(self) -> int:
        """What is not in a decoder layer: the embedding, the final norm, the output layer."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def flop_params(self) -> float:
        """The N of 6N FLOPs per token: all but the input embedding (a lookup), unless tied
        (as ``train/models.py:flop_params`` counts it for a run's MFU)."""
        return self.params if self.tied else self.params - self.vocab * self.hidden

    @property
    def label(self) -> str:
        """``13B``, ``135M``: the size in words."""
        if self.params >= 1e9:
            return f"{self.params / 1e9:.3g}B"
        return f"{self.params / 1e6:.3g}M"


def swiglu_width(hidden: int, multiple_of: int = 256) -> int:
    """LLaMA's MLP width: 2/3 of 4 d, rounded up to a multiple of 256."""
    return multiple_of * math.ceil(int(2 * 4 * hidden / 3) / multiple_of)


def _llama(name: str, params: float, hidden: int, heads: int, layers: int) -> ModelShape:
    return ModelShape(name, params, layers, hidden, swiglu_width(hidden), 32000, heads, heads)


LLAMA: dict[str, ModelShape] = {
    "7b": _llama("llama-7b", 6.74e9, 4096, 32, 32),
    "13b": _llama("llama-13b", 13.0e9, 5120, 40, 40),
    "65b": _llama("llama-65b", 65.2e9, 8192, 64, 80),
}


def counted_params(layers: int, hidden: int, intermediate: int, vocab: int, heads: int,
                   kv_heads: int, tied: bool) -> int:
    """Parameters of a Llama-style model from its shape (no biases)."""
    probe = ModelShape("", 0, layers, hidden, intermediate, vocab, heads, kv_heads, tied)
    return layers * probe.layer_params + probe.root_params


def shape_from_config(config: dict[str, Any], name: str) -> ModelShape | None:
    """The shape a Llama-style ``config.json`` describes; None when it lacks the keys (another
    architecture: GPT-2's ``n_embd``, ...)."""
    keys = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_attention_heads")
    if not all(isinstance(config.get(k), int) and config[k] > 0 for k in keys):
        return None
    hidden, layers, inter, vocab, heads = (config[k] for k in keys)
    kv = config.get("num_key_value_heads") or heads
    if not isinstance(kv, int) or kv <= 0 or heads % kv:
        return None
    tied = bool(config.get("tie_word_embeddings", False))
    params = counted_params(layers, hidden, inter, vocab, heads, kv, tied)
    return ModelShape(name, float(params), layers, hidden, inter, vocab, heads, kv, tied)
