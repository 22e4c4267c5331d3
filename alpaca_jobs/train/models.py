"""What training needs of a model beyond loading it: a pad token, the FLOP-counting parameter
count, the decoder-layer class FSDP wraps. Base models themselves (presets built into the
cache) come from ``alpaca_jobs.model_dirs``."""

from __future__ import annotations

from alpaca_jobs.common.errors import UserError

PAD_TOKEN = "[PAD]"


def ensure_pad_token(tokenizer) -> bool:
    """Add the pad token to the tokenizer if it has none; True if added."""
    if tokenizer.pad_token is not None:
        return False
    return bool(tokenizer.add_special_tokens({"pad_token": PAD_TOKEN}))


def add_pad_token(tokenizer, model) -> int:
    """Add a pad token if missing; new embedding rows = mean of the existing rows (as Alpaca).

    Returns the number of tokens added.
    """
    import torch

    if not ensure_pad_token(tokenizer):
        return 0
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for emb in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e is not None}.values():
            emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return 1


def flop_params(model) -> int:
    """Parameters that multiply activations, the N of the 6N FLOPs per token (PaLM, appendix B):
    all but the input embedding table, a lookup, unless the output layer shares it."""
    total = sum(p.numel() for p in model.parameters())
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    if out is not None and out.weight is emb.weight:
        return total
    return total - emb.weight.numel()


def decoder_layer_class(model, configured: str = "auto") -> str:
    """The class FSDP wraps one unit per instance of, derived from the model itself."""
    names = {type(m).__name__ for m in model.modules()}
    if configured != "auto":
        if configured not in names:
            raise UserError(
                f"layout fsdp_config.fsdp_transformer_layer_cls_to_wrap: {configured!r} is not a "
                f"module class of {type(model).__name__}; use 'auto'"
            )
        return configured
    candidates = [c for c in (getattr(model, "_no_split_modules", None) or []) if c in names]
    if not candidates:
        # Fallback: the class of the repeated blocks in the model's layer list.
        layers = getattr(getattr(model, "model", None), "layers", None)
        if layers is not None and len(layers):
            candidates = [type(layers[0]).__name__]
    if not candidates:
        raise UserError(
            f"cannot find the decoder-layer class of {type(model).__name__} to auto-wrap for "
            "FSDP; set layout fsdp_config.fsdp_transformer_layer_cls_to_wrap to its class name"
        )
    return candidates[0]
