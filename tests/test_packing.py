"""Packing must not change the maths: loss and gradients equal those of the padded batch."""

import copy
import json

import torch

from alpaca_jobs.train.data import build_examples
from alpaca_jobs.train.packing import computed_tokens, forward_loss_sum, pack, pad
from tests.conftest import SEEDS

PRE = ("With input.", "No input.")


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = forward_loss_sum(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_loss_and_gradients_equal_padded(tiny):
    tok, model = tiny
    model = copy.deepcopy(model).train()
    examples, _ = build_examples(SEEDS, tok, 512, PRE)
    batch = examples[:6]
    loss_pad, g_pad = _grads(model, pad(batch, tok.pad_token_id))
    loss_pack, g_pack = _grads(model, pack(batch))
    assert torch.allclose(loss_pad, loss_pack, rtol=1e-5), (loss_pad, loss_pack)
    assert g_pad.keys() == g_pack.keys()
    for name in g_pad:
        scale = g_pad[name].abs().max()
        assert (g_pad[name] - g_pack[name]).abs().max() <= 1e-4 * scale, name


def test_examples_in_a_packed_row_do_not_see_each_other(tiny):
    tok, model = tiny
    examples, _ = build_examples(SEEDS, tok, 512, PRE)
    a, b, c = examples[:3]
    with torch.no_grad():
        alone = model(**{k: v for k, v in pack([b]).items() if k != "labels"}, use_cache=False).logits
        row = pack([a, b, c])
        packed = model(**{k: v for k, v in row.items() if k != "labels"}, use_cache=False).logits
    start = len(a.input_ids)
    assert torch.allclose(alone[0], packed[0, start : start + len(b.input_ids)], atol=1e-5)


def test_pack_restarts_positions_and_masks_boundaries(tmp_path, tiny):
    tok, _ = tiny
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"instruction": f"Task {i}.", "output": f"Answer {i}."} for i in range(3)]))
    examples, _ = build_examples(f, tok, 512, PRE)
    row = pack(examples)
    starts = [0, len(examples[0].input_ids), len(examples[0].input_ids) + len(examples[1].input_ids)]
    pos = row["position_ids"][0].tolist()
    assert [pos[s] for s in starts] == [0, 0, 0]
    assert all(row["labels"][0, s].item() == -100 for s in starts)
    assert computed_tokens(examples, packed=True) == row["input_ids"].shape[1]
    assert computed_tokens(examples, packed=False) == 3 * max(len(e.input_ids) for e in examples)
