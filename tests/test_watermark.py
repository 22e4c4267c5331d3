"""Kirchenbauer et al. 2023 watermark: detector maths, and the statistical claim on the
default model's 200-token outputs (>= 95% detected, <= 1% false positives, 200 samples each)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from alpaca_jobs.serve.watermark import (
    GreenLists,
    WatermarkConfig,
    WatermarkLogitsProcessor,
    detect_ids,
)
from tests.conftest import SEEDS

CFG = WatermarkConfig(key="statistics-test-key")


def test_z_score_is_the_binomial_test():
    vocab = 1000
    lists = GreenLists(CFG, vocab)
    ids = [5]
    rng = random.Random(0)
    for _ in range(100):  # all green: G = T
        greens = lists.mask(ids[-1]).nonzero().flatten().tolist()
        ids.append(rng.choice(greens))
    d = detect_ids(ids, CFG, vocab)
    assert d.tokens_scored == 100 and d.green == 100
    assert d.z == pytest.approx((100 - 25) / math.sqrt(100 * 0.25 * 0.75))
    assert d.watermarked and d.p_value < 1e-10
    other = detect_ids(ids, WatermarkConfig(key="another-key"), vocab)
    assert not other.watermarked  # the key matters


def test_green_list_is_gamma_of_the_vocabulary_and_depends_on_the_previous_token():
    lists = GreenLists(CFG, 5000)
    a, b = lists.mask(1), lists.mask(2)
    assert a.sum() == b.sum() == 1250 and not torch.equal(a, b)
    assert torch.equal(a, GreenLists(CFG, 5000).mask(1))  # deterministic from the key


def test_processor_adds_delta_on_green_only():
    proc = WatermarkLogitsProcessor(CFG, 100)
    scores = torch.zeros(2, 100)
    out = proc(torch.tensor([[3], [4]]), scores.clone())
    for row, prev in enumerate((3, 4)):
        mask = proc.lists.mask(prev)
        assert torch.all(out[row][mask] == CFG.delta) and torch.all(out[row][~mask] == 0)


@pytest.mark.slow
@pytest.mark.integration
def test_detection_rates_on_200_token_outputs_of_the_default_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from alpaca_jobs.train.models import resolve_base_model

    path = resolve_base_model("preset:smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    vocab = model.get_output_embeddings().weight.shape[0]
    tasks = [json.loads(line)["instruction"] for line in SEEDS.read_text().splitlines()]
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
               for t in (tasks * 2)[:200]]

    def outputs(watermark: bool) -> list[list[int]]:
        procs = LogitsProcessorList([WatermarkLogitsProcessor(CFG, vocab)] if watermark else [])
        rows = []
        for i in range(0, len(prompts), 100):
            enc = tok(prompts[i : i + 100], return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(i + watermark)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=200, min_new_tokens=200, do_sample=True, top_k=0,
                                     logits_processor=procs, pad_token_id=tok.pad_token_id)
            rows += out[:, enc["input_ids"].shape[1]:].tolist()
        return rows

    marked = [detect_ids(r, CFG, vocab) for r in outputs(True)]
    plain = [detect_ids(r, CFG, vocab) for r in outputs(False)]
    # Distinct (previous, token) pairs only: repeats in 200 tokens are scored once.
    assert len(marked) == len(plain) == 200 and all(0 < d.tokens_scored <= 199 for d in marked + plain)
    tpr = sum(d.watermarked for d in marked) / 200
    fpr = sum(d.watermarked for d in plain) / 200
    print(f"detected {tpr:.1%} of watermarked, {fpr:.1%} of unwatermarked; "
          f"median z {sorted(d.z for d in marked)[100]:.1f} vs {sorted(d.z for d in plain)[100]:.2f}")
    assert tpr >= 0.95 and fpr <= 0.01


def _repetitive(rng: random.Random, vocab: int) -> list[int]:
    """Unwatermarked text that repeats itself: a token 200 times, or a short cycle of tokens."""
    kind = rng.choice(["one", "two", "cycle", "phrases"])
    if kind == "one":
        return [rng.randrange(vocab)] * 200
    if kind == "two":
        return [rng.randrange(vocab), rng.randrange(vocab)] * 100
    if kind == "cycle":
        cycle = [rng.randrange(vocab) for _ in range(rng.randint(3, 12))]
        return (cycle * 200)[:200]
    phrases = [[rng.randrange(vocab) for _ in range(rng.randint(2, 6))] for _ in range(4)]
    return [t for _ in range(60) for t in rng.choice(phrases)][:200]


def test_repetitive_unwatermarked_text_is_not_flagged():
    """Scoring each (previous token, token) pair once keeps false positives <= 1% on text that
    repeats itself (1200 texts over 300 keys); counting repeats, as before, flags far more."""
    vocab, rng = 2000, random.Random(7)
    once = plain = 0
    for k in range(300):
        cfg = WatermarkConfig(key=f"key-{k}")
        for _ in range(4):
            ids = _repetitive(rng, vocab)
            once += detect_ids(ids, cfg, vocab).watermarked
            plain += detect_ids(ids, cfg, vocab, ignore_repeated=False).watermarked
    assert once / 1200 <= 0.01, once
    assert plain / 1200 >= 0.10, plain  # the test can tell: the old count fails it


def test_repeated_pairs_are_scored_once_and_the_threshold_is_a_setting():
    vocab = 1000
    lists = GreenLists(CFG, vocab)
    green = lists.mask(7).nonzero().flatten().tolist()[0]
    d = detect_ids([7, green] * 50, CFG, vocab)
    assert (d.tokens_scored, d.green) == (2, int(lists.mask(green)[7]) + 1)
    assert detect_ids([7, green] * 50, CFG, vocab, ignore_repeated=False).tokens_scored == 99
    rng = random.Random(1)
    ids = [5]
    for _ in range(12):  # 12 green pairs: z = 12 * 0.75 / sqrt(12 * 0.1875) = 6.0
        ids.append(rng.choice(lists.mask(ids[-1]).nonzero().flatten().tolist()))
    assert detect_ids(ids, CFG, vocab).watermarked
    assert not detect_ids(ids, WatermarkConfig(key=CFG.key, z_threshold=7.0), vocab).watermarked


def test_the_z_threshold_is_a_serve_setting():
    from pydantic import ValidationError

    from alpaca_jobs.serve.config import ServeConfig

    assert ServeConfig().watermark_z_threshold == 4.0
    assert ServeConfig(watermark_z_threshold=5.5).watermark_z_threshold == 5.5
    with pytest.raises(ValidationError, match="watermark_z_threshold"):
        ServeConfig(watermark_z_threshold=0)
