import copy

import pytest
import torch

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.presets import check_base_model
from alpaca_jobs.train.models import add_pad_token, decoder_layer_class


def test_pad_token_is_added_with_mean_embedding(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    assert tok.pad_token is None  # LLaMA-like: no pad token to begin with
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert add_pad_token(tok, model) == 1
    new_in = model.get_input_embeddings().weight
    assert new_in.shape[0] == old_in.shape[0] + 1 == len(tok)
    assert torch.allclose(new_in[-1], old_in.mean(0), atol=1e-6)
    assert torch.allclose(model.get_output_embeddings().weight[-1], old_out.mean(0), atol=1e-6)
    assert torch.equal(new_in[:-1], old_in)
    assert model.config.pad_token_id == tok.pad_token_id
    assert add_pad_token(tok, model) == 0  # idempotent


def test_decoder_layer_class_is_derived_from_the_model(tiny):
    _, model = tiny
    assert decoder_layer_class(model) == "LlamaDecoderLayer"
    assert decoder_layer_class(model, "LlamaDecoderLayer") == "LlamaDecoderLayer"
    with pytest.raises(UserError, match="not a module class"):
        decoder_layer_class(model, "GPT2Block")


def test_decoder_layer_class_clear_error_when_unfindable():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="cannot find the decoder-layer class"):
        decoder_layer_class(m)


def test_missing_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is not a directory"):
        check_base_model(str(tmp_path / "llama-7b"))
    with pytest.raises(UserError, match="has no config.json"):
        check_base_model(str(tmp_path))
    with pytest.raises(UserError, match="unknown preset"):
        check_base_model("preset:gpt-5")


def test_tiny_preset_is_cached_and_reloads_offline(tiny_dir):
    from alpaca_jobs.model_dirs import resolve_base_model
    from tests.conftest import SEEDS

    assert resolve_base_model("preset:tiny-llama", str(SEEDS)) == tiny_dir
    assert (tiny_dir / "config.json").is_file() and (tiny_dir / "tokenizer.json").is_file()


def test_tokenizer_round_trips_text(tiny):
    tok, _ = tiny
    text = "Hello wörld: 3 + 4 = 7\n### Response:"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    m = copy.deepcopy(tiny[1])
    assert m.config.num_hidden_layers == 4
