"""The memory check before launch (train/memory.py) and the 13B/65B recipes and estimates."""

import json

import pytest

from alpaca_jobs.spec import load_spec
from alpaca_jobs.train.memory import GIB, LLAMA, fit, shape_from_config
from tests.conftest import cli


def _fit(model, nodes, sharding, tokens=8192, checkpointing=False):
    return fit(LLAMA[model], nodes=nodes, per_node=8, sharding=sharding, tokens=tokens,
               checkpointing=checkpointing, bf16=True, gpu_gb=80)


def test_what_fits_on_a100_80gb():
    assert _fit("llama-7b", 1, "auto").fits  # the 7B recipe: one node, full shard, no checkpointing
    assert _fit("llama-13b", 2, "auto", tokens=4096).fits and not _fit("llama-13b", 2, "auto").fits
    assert _fit("llama-65b", 4, "full", checkpointing=True).fits
    hsdp = _fit("llama-65b", 4, "hybrid", checkpointing=True)
    assert not hsdp.fits and hsdp.shard == 8  # each node holds the whole model's states
    assert hsdp.states == pytest.approx(65.2e9 * 16 / 8) and hsdp.states / GIB > 80
    assert _fit("llama-65b", 4, "full").activations > 10 * _fit("llama-65b", 4, "full", checkpointing=True).activations


def test_a_config_json_gives_the_shape(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000, "intermediate_size": 11008,
        "num_attention_heads": 32}))
    shape = shape_from_config(tmp_path / "config.json")
    assert shape.params == pytest.approx(6.74e9, rel=0.01) and shape.layers == 32
    (tmp_path / "config.json").write_text("{not json")
    assert shape_from_config(tmp_path / "config.json") is None


@pytest.mark.parametrize("spec,nodes", [("jobs/train.yaml", 1), ("jobs/train-13b.yaml", 2), ("jobs/train-65b.yaml", 4)])
def test_the_recipes_validate_fit_and_render(spec, nodes):
    loaded = load_spec(spec)
    assert loaded.spec.resources.nodes == nodes and loaded.spec.resources.gpus_per_node == 8
    from alpaca_jobs.train.memory import check_memory

    f = check_memory(loaded)
    assert f is not None and f.fits and f.total / GIB < 80
    dry = cli("submit", spec, "--cluster", "slurm", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"#SBATCH --nodes={nodes}" in dry.stdout
    k8s = cli("submit", spec, "--cluster", "k8s", "--dry-run")
    assert k8s.returncode == 0, k8s.stderr


def test_thirteen_b_is_stanfords_recipe_and_sixty_five_b_states_its_choice():
    t = load_spec("jobs/train-13b.yaml").spec.train
    assert (t.global_batch_size, t.learning_rate, t.epochs, t.max_length, t.weight_decay) == (128, 1e-5, 5, 512, 0)
    big = load_spec("jobs/train-65b.yaml")
    assert big.layout.fsdp_config.sharding == "full" and big.layout.fsdp_config.fsdp_activation_checkpointing


def test_a_layout_that_cannot_hold_the_model_is_refused_in_one_line():
    proc = cli("submit", "jobs/train-65b.yaml", "--cluster", "slurm", "--dry-run",
               "--set", "layout=layouts/fsdp2-gpu-bf16.yaml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "hybrid shard over 8" in line and "GiB per GPU" in line and "> 75 GiB" in line and "sharding: full" in line
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # A CPU run is never refused: nothing to check there.
    assert cli("submit", "jobs/train-local.yaml", "--dry-run").returncode == 0


def test_cost_estimate_of_13b_and_65b_states_the_inter_node_bandwidth():
    from alpaca_jobs.ops.estimate import comm_bytes, estimate

    thirteen = cli("cost", "estimate", "--model", "llama-13b", "--nodes", "2", "--mfu", "0.4")
    assert thirteen.returncode == 0, thirteen.stderr
    out = thirteen.stdout
    assert "13B Alpaca recipe on 2 nodes of 8x a100-80gb" in out and "5 epochs" in out
    assert "hybrid shard, 2 nodes" in out and "200 GB/s per node assumed" in out and "step        = max(" in out
    slow = cli("cost", "estimate", "--model", "llama-65b", "--nodes", "4", "--sharding", "full", "--mfu", "0.4",
               "--inter-node-gbs", "50")
    assert slow.returncode == 0 and "communication-bound" in slow.stdout, slow.stdout
    # Through each GPU's link on 2 nodes: full shard's 15/16 x 8 B over the 8 hops of a node's ring
    # (bench/collectives.py: 0.533x for HSDP) vs HSDP's 2 x 1/2 x 4 B / 8 a parameter.
    assert comm_bytes("llama-7b", 2, 8, "full") / comm_bytes("llama-7b", 2, 8, "hybrid") == pytest.approx(1.875)
    one = estimate(gpus=8, price=1, epochs=3, examples=52002, mean_tokens=200, mfu=0.4, model="llama-65b", nodes=4,
                   sharding="full")
    fast = estimate(gpus=8, price=1, epochs=3, examples=52002, mean_tokens=200, mfu=0.4, model="llama-65b", nodes=4,
                    sharding="full", inter_node_gbs=1000)
    assert one.cost_usd > fast.cost_usd  # a slower network costs more once communication binds
    bad = cli("cost", "estimate", "--nodes", "0", "--mfu", "0.4")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
