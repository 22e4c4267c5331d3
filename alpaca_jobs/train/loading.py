"""Build the sharded model: rank 0 reads the weights once, every rank gets its shard by broadcast.

At 7B, eight ranks each reading the fp32 checkpoint is 8 x 27 GB from shared storage and
8 x 27 GB of host memory. Here every rank builds the model on the meta device (no memory, no
init), compiles and shards it, allocates only its shard, and rank 0 broadcasts the full
tensors one at a time; buffers that are not in the state dict (rotary frequencies) are
broadcast too. The root module computes the loss itself (fused, chunked linear
cross-entropy over the target positions only), so a row's full logits never exist.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.distributed as dist

from alpaca_jobs.train.fsdp import Dist
from alpaca_jobs.train.loss import linear_cross_entropy_sum

log = logging.getLogger(__name__)


class LossModel(torch.nn.Module):
    """A causal LM whose forward returns the summed cross-entropy of the given targets."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, target_pos: torch.Tensor,
                target_ids: torch.Tensor, **attention_kwargs) -> torch.Tensor:
        decoder = getattr(self.lm, self.lm.base_model_prefix)
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                         **attention_kwargs).last_hidden_state
        picked = hidden[0].index_select(0, target_pos)  # positions whose next token is a target
        return linear_cross_entropy_sum(picked, self.lm.get_output_embeddings().weight, target_ids)

    def decoder_layers(self, class_name: str = "auto") -> list[torch.nn.Module]:
        """The blocks FSDP shards one by one: instances of the layout's
        ``fsdp_transformer_layer_cls_to_wrap`` ("auto": derived from the model)."""
        from alpaca_jobs.train.models import decoder_layer_class

        name = decoder_layer_class(self.lm, class_name)
        return [m for m in self.lm.modules() if type(m).__name__ == name]


def _read_on_rank0(base: Path, tok, d: Dist):
    """Rank 0: the real model (pad token added as Alpaca does); its config for everyone."""
    from transformers import AutoModelForCausalLM

    from alpaca_jobs.train.models import add_pad_token

    real = None
    box: list[object] = [None]
    if d.main:
        real = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        add_pad_token(tok, real)
        box[0] = real.config.to_dict()
    if d.world > 1:
        dist.broadcast_object_list(box, src=0)
    return real, box[0]


def load_sharded(base: Path, tok, d: Dist, shard_fn) -> tuple[LossModel, int, int]:
    """The model, sharded by ``shard_fn(root)``, with the base weights; its size, and
    the parameters that count in model FLOPs."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    from alpaca_jobs.train.models import ensure_pad_token, flop_params

    real, config_dict = _read_on_rank0(base, tok, d)
    if not d.main:
        ensure_pad_token(tok)  # rank 0 did it inside add_pad_token
    config = type(AutoConfig.from_pretrained(base)).from_dict(config_dict)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    root = LossModel(lm)
    num_params, matmul_params = sum(p.numel() for p in root.parameters()), flop_params(lm)
    full, buffers = {}, {}
    if real is not None:
        lm.generation_config = real.generation_config
        full = {f"lm.{k}": v for k, v in real.state_dict().items()}
        buffers = {f"lm.{k}": v for k, v in real.named_buffers()}
    shard_fn(root)
    root.to_empty(device=d.device)
    set_model_state_dict(root, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    with torch.no_grad():
        for name, buf in sorted(root.named_buffers()):
            if name in buffers:
                buf.copy_(buffers[name])
            if d.world > 1:
                dist.broadcast(buf, src=0)
    del real, full
    return root, num_params, matmul_params


def consolidated_state_dict(root: LossModel, d: Dist) -> dict[str, torch.Tensor]:
    """The full state dict of the inner model, on rank 0's CPU (collective: all ranks call it).
    A tensor shared under two names (tied embeddings) is gathered once and stays shared."""
    from torch.distributed.tensor import DTensor

    out: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor | None] = {}
    for name, value in root.lm.state_dict().items():
        if id(value) not in seen:
            full = value.full_tensor() if isinstance(value, DTensor) else value
            seen[id(value)] = full.detach().cpu() if d.main else None  # others drop it at once
        if d.main:
            out[name] = seen[id(value)]
    return out
