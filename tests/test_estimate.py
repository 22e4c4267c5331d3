"""`alpaca-jobs cost estimate` for the 13B and 65B recipes: the model's shape, the nodes, and the
inter-node traffic of the sharding in the formula (the 7B output is tested in test_cli.py)."""

import pytest

from alpaca_jobs.ops.estimate import NODE_BANDWIDTH, RECIPES, estimate, resolve_sharding
from alpaca_jobs.ops.shapes import LLAMA
from alpaca_jobs.spec import load_spec
from alpaca_jobs.train.mesh import resolve_sharding as mesh_sharding
from tests.conftest import ROOT, cli

STEP_TOKENS = 128 * 200  # global batch x the assumed mean tokens


def _fpt(model: str, mean: float = 200) -> float:
    s = LLAMA[model]
    return 6 * (s.params - s.vocab * s.hidden) + 12 * s.layers * s.hidden * mean


def test_the_defaults_are_the_recipes_in_jobs():
    for model, recipe in RECIPES.items():
        loaded = load_spec(ROOT / recipe.spec)
        res, cfg, fsdp = loaded.spec.resources, loaded.spec.train, loaded.layout.fsdp_config
        assert cfg.model_size == model
        assert (res.nodes, res.gpus_per_node, cfg.epochs, cfg.global_batch_size) == \
            (recipe.nodes, 8, recipe.epochs, recipe.global_batch)
        assert mesh_sharding(fsdp.sharding, res.nodes) == recipe.sharding == resolve_sharding(recipe.sharding, res.nodes)
        assert fsdp.fsdp_activation_checkpointing == recipe.recompute


def test_full_shard_sends_the_weights_twice_and_the_gradients_once_across_nodes():
    est = estimate(gpus=32, price=3.43, epochs=3, examples=52002, mean_tokens=200, mfu=0.4, model="65b",
                   nodes=4, sharding="full", recompute=True)
    comm = (2 + 2 + 4) * 65.2e9 * 3 / 4 / NODE_BANDWIDTH
    compute = STEP_TOKENS * _fpt("65b") * 4 / 3 / (0.4 * 312e12 * 32)
    assert est.comm_seconds == pytest.approx(comm) and est.step_seconds == pytest.approx(max(compute, comm))
    assert est.tokens_per_second == pytest.approx(STEP_TOKENS / max(compute, comm))
    assert est.cost_usd == pytest.approx(est.tokens / est.tokens_per_second / 3600 * 32 * 3.43)


def test_hybrid_all_reduces_the_gradient_shards_across_nodes():
    est = estimate(gpus=16, price=3.43, epochs=5, examples=52002, mean_tokens=200, mfu=0.4, model="13b",
                   nodes=2, sharding="hybrid", recompute=False)
    assert est.comm_seconds == pytest.approx(2 * 4 * 13.0e9 * 1 / 2 / NODE_BANDWIDTH)
    compute = STEP_TOKENS * _fpt("13b") / (0.4 * 312e12 * 16)
    assert est.step_seconds == pytest.approx(max(compute, est.comm_seconds))


def test_slow_links_make_a_run_communication_bound():
    fast = estimate(gpus=32, price=1, epochs=3, examples=52002, mean_tokens=200, mfu=0.4, model="65b", nodes=4)
    slow = estimate(gpus=32, price=1, epochs=3, examples=52002, mean_tokens=200, mfu=0.4, model="65b", nodes=4,
                    node_bandwidth=50e9)
    assert slow.comm_seconds == pytest.approx(4 * fast.comm_seconds)
    assert slow.step_seconds == slow.comm_seconds > fast.step_seconds
    assert any("COMMUNICATION-BOUND" in line for line in slow.lines)


def test_cli_shows_the_13b_formula_and_its_bandwidth_assumption():
    proc = cli("cost", "estimate", "--model", "13b", "--mfu", "0.4")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "13B Alpaca recipe on 2 nodes x 8x a100-80gb (16 GPUs), hybrid shard, activation checkpointing" in out
    assert "52002 examples x 5 epochs" in out and "FLOPs/token = 6 x 1.28e+10 + 12 x 40 x 5120 x 200.0" in out
    assert "x 4/3 (activation checkpointing" in out
    assert "comm        = 2 x 4 B x 1.3e+10 params x (2-1)/2 / 200 GB/s per node = 0.260 s/step" in out
    assert "bandwidth   = 200 GB/s per node across nodes (assumed: 8 x 200 Gb/s HDR InfiniBand" in out
    assert "step        = max(compute, comm) = " in out and "(overlapped: " in out


def test_cli_65b_on_other_hardware_and_bad_options():
    proc = cli("cost", "estimate", "--model", "65b", "--mfu", "0.4", "--node-bandwidth", "50", "--nodes", "8")
    assert proc.returncode == 0, proc.stderr
    assert "65B Alpaca recipe on 8 nodes x 8x a100-80gb (64 GPUs), full shard" in proc.stdout
    assert "(2 + 2 + 4) B x 6.52e+10 params x (8-1)/8 / 50 GB/s per node = 9.128 s/step" in proc.stdout
    assert "(given: --node-bandwidth)" in proc.stdout and "COMMUNICATION-BOUND" in proc.stdout
    hybrid = cli("cost", "estimate", "--model", "65b", "--mfu", "0.4", "--sharding", "hybrid")
    assert "hybrid shard" in hybrid.stdout and "2 x 4 B x 6.52e+10 params x (4-1)/4" in hybrid.stdout
    one = cli("cost", "estimate", "--model", "13b", "--mfu", "0.4", "--nodes", "1", "--no-recompute")
    assert "13B Alpaca recipe on 8x a100-80gb" in one.stdout and "within one node (NVLink)" in one.stdout
    assert "4/3" not in one.stdout
    for bad in (["--nodes", "0"], ["--node-bandwidth", "0"], ["--epochs", "0"], ["--model", "30b"]):
        proc = cli("cost", "estimate", "--mfu", "0.4", *bad)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, bad
