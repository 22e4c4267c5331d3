"""The memory check before launch (train/memory.py): what the recipes need per GPU, a layout
that cannot hold its model refused in one line before anything is submitted, and the
activation figures held to what autograd really keeps in a transformers Llama."""

import json

import pytest

from alpaca_jobs.common.errors import SpecError
from alpaca_jobs.ops.prices import gpu_memory_gib
from alpaca_jobs.ops.shapes import LLAMA, counted_params, shape_from_config
from alpaca_jobs.spec import load_spec
from alpaca_jobs.train import memory
from tests.conftest import ROOT, cli

RECIPES = {"jobs/train.yaml": 1, "jobs/train-13b.yaml": 2, "jobs/train-65b.yaml": 4}
HYBRID = "layout=layouts/fsdp2-gpu-bf16-hybrid-ac.yaml"


def _estimate(spec: str, *sets: str) -> memory.Estimate:
    loaded = load_spec(ROOT / spec, list(sets))
    shape, source = memory.model_shape(loaded.spec.train)
    return memory.estimate(shape, memory.setup_of(loaded.spec, loaded.layout),
                           loaded.spec.resources.gpu_type, source)


def test_llama_shapes_give_the_published_parameter_counts():
    """The SwiGLU widths (2/3 4d, rounded up to 256) and LLaMA's table 2 agree to 0.2%."""
    assert [LLAMA[m].intermediate for m in ("7b", "13b", "65b")] == [11008, 13824, 22016]
    for m, shape in LLAMA.items():
        n = counted_params(shape.layers, shape.hidden, shape.intermediate, shape.vocab, shape.heads,
                           shape.kv_heads, shape.tied)
        assert n == pytest.approx(shape.params, rel=2e-3), m


def test_the_seven_b_recipe_fits_one_node():
    est = _estimate("jobs/train.yaml")
    assert est.setup.mesh.sharding == "full" and est.setup.mesh.shard_size == 8 and est.fits
    assert est.parts["sharded state"] == pytest.approx(16 * 6.74e9 / 8)
    assert est.parts["accumulation"] == 0  # 16 examples x 512 tokens = one 8192-token row
    assert 60 < est.total / memory.GIB < 80


def test_the_13b_recipe_fits_two_nodes_sharded_within_each():
    est = _estimate("jobs/train-13b.yaml")
    assert (est.setup.mesh.sharding, est.setup.mesh.shape) == ("hybrid", (2, 8))
    assert est.parts["sharded state"] == pytest.approx(16 * 13.0e9 / 8)  # ~208 GB over one node's 8
    assert est.fits and est.total < 60 * memory.GIB


def test_the_65b_recipe_fits_four_nodes_fully_sharded():
    est = _estimate("jobs/train-65b.yaml")
    assert (est.setup.mesh.sharding, est.setup.mesh.shard_size) == ("full", 32)
    assert est.parts["sharded state"] == pytest.approx(16 * 65.2e9 / 32)
    assert est.setup.recompute and est.fits


def test_65b_sharded_within_a_node_is_refused_in_one_line():
    with pytest.raises(SpecError) as err:
        load_spec(ROOT / "jobs/train-65b.yaml", [HYBRID])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{ROOT / 'jobs/train-65b.yaml'}: train: 65.2B (train.model_size: 65b) on 32 GPUs, "
                          "hybrid shard over 8: ")
    state = 16 * 65.2e9 / 8 / memory.GIB
    assert f"sharded state {state:.1f}" in msg and "> 80 GiB on a100-80gb" in msg
    assert "use sharding: full in the layout" in msg


def test_the_refusal_reaches_submit_dry_run_and_render_without_a_traceback(tmp_path):
    text = (ROOT / "jobs/train-65b.yaml").read_text()
    layout = ROOT / "jobs/layouts/fsdp2-gpu-bf16-hybrid-ac.yaml"
    spec = tmp_path / "train-65b-hybrid.yaml"
    spec.write_text(text.replace("layout: layouts/fsdp2-gpu-bf16-full-ac.yaml", f"layout: {layout}")
                    .replace("runs_dir: /shared/alpaca-jobs/runs", f"runs_dir: {tmp_path / 'runs'}"))
    for args in (["submit", str(spec), "--cluster", "slurm", "--dry-run"],
                 ["submit", str(spec), "--cluster", "local", "--dry-run"],
                 ["render", str(spec)], ["spec", "check", str(spec)]):
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"error: {spec}: train: 65.2B (train.model_size: 65b) on 32 GPUs, "
                                      "hybrid shard over 8: "), proc.stderr
        assert "use sharding: full" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert "#SBATCH" not in proc.stdout and "nothing submitted" not in proc.stdout
    assert not (tmp_path / "runs").exists()


def test_gradient_accumulation_keeps_the_whole_model_unsharded():
    """Four GPUs split a 7B step into two micro-steps: the loop then holds every layer's
    weights and fp32 gradients unsharded until the last one, and 80 GB no longer suffice."""
    with pytest.raises(SpecError, match=r"on 4 GPUs, full shard over 4: .*accumulation 25\.1.*"
                                        r"turn on fsdp_activation_checkpointing") as err:
        load_spec(ROOT / "jobs/train.yaml", ["resources.gpus_per_node=4"])
    assert "\n" not in str(err.value)
    assert memory.micro_steps(128, 4, 512, 8192) == 2 and memory.micro_steps(128, 8, 512, 8192) == 1


def test_activation_checkpointing_and_full_shard_are_what_let_65b_fit():
    shape = LLAMA["65b"]
    base = memory.Setup(nodes=4, procs_per_node=8, sharding="full", bf16=True, reshard_after_forward=True,
                        recompute=True, tokens=2048, micro_steps=1)
    fits = memory.estimate(shape, base, "a100-80gb")
    no_ckpt = memory.estimate(shape, memory.replace(base, recompute=False, tokens=4096), "a100-80gb")
    assert fits.fits and not no_ckpt.fits
    assert no_ckpt.parts["activations"] > 100 * memory.GIB > 10 * fits.parts["activations"]
    # Hybrid over one node needs 8 x the sharded state whatever the node count.
    hybrid = [memory.estimate(shape, memory.replace(base, sharding="hybrid", nodes=n), "a100-80gb") for n in (2, 8)]
    assert hybrid[0].parts["sharded state"] == hybrid[1].parts["sharded state"] == 16 * shape.params / 8


def test_cpu_jobs_are_never_refused():
    loaded = load_spec(ROOT / "jobs/train-local.yaml", ["train.model_size=65b"])
    assert "memory_per_gpu" not in loaded.derived()
    assert memory.check(loaded.spec, loaded.layout) is None


def test_a_gpu_job_of_unknown_size_is_not_refused_and_says_so():
    loaded = load_spec(ROOT / "jobs/train.yaml", ["train.model_size=null"])
    assert "set train.model_size" in loaded.derived()["memory_per_gpu"]


def test_the_base_models_config_json_is_read_when_visible(tmp_path):
    """Read from the model directory where it is visible here (a Llama 13B's config.json)."""
    model = tmp_path / "llama-13b"
    model.mkdir()
    cfg = {"hidden_size": 5120, "num_hidden_layers": 40, "intermediate_size": 13824, "vocab_size": 32000,
           "num_attention_heads": 40, "num_key_value_heads": 40, "tie_word_embeddings": False}
    (model / "config.json").write_text(json.dumps(cfg))
    loaded = load_spec(ROOT / "jobs/train-13b.yaml", [f"train.base_model={model}", "train.model_size=null"])
    line = loaded.derived()["memory_per_gpu"]
    assert f"13B ({model / 'config.json'}) on 16 GPUs, hybrid shard over 8" in line
    with pytest.raises(SpecError, match=r"train.model_size: 7b is llama-7b \(6.74e\+09 parameters\), but "
                                        r".*config.json describes 1.3e\+10; fix one of them"):
        load_spec(ROOT / "jobs/train-13b.yaml", [f"train.base_model={model}", "train.model_size=7b"])
    (model / "config.json").write_text("{broken")
    proc = cli("spec", "check", "jobs/train-13b.yaml", "--set", f"train.base_model={model}")
    assert proc.returncode == 2 and "config.json is not readable JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gpu_memory_comes_from_the_table_or_the_name():
    assert gpu_memory_gib("a100-80gb") == 80 and gpu_memory_gib("h200-141gb") == pytest.approx(140.4, abs=0.1)
    assert gpu_memory_gib("l40s-48gb") == 48 and gpu_memory_gib("mystery") is None and gpu_memory_gib(None) is None
    loaded = load_spec(ROOT / "jobs/train-13b.yaml", ["resources.gpu_type=mystery", "cost.gpu_hour_usd=2"])
    assert "no memory known for this gpu_type" in loaded.derived()["memory_per_gpu"]


@pytest.mark.parametrize("spec,nodes", RECIPES.items())
def test_each_recipe_validates_and_renders_for_slurm(spec, nodes, tmp_path):
    proc = cli("render", spec)
    assert proc.returncode == 0, proc.stderr
    assert f"#SBATCH --nodes={nodes}\n" in proc.stdout and "#SBATCH --gpus-per-node=8\n" in proc.stdout
    assert "#SBATCH --ntasks-per-node=8\n" in proc.stdout and "#SBATCH --exclusive\n" in proc.stdout
    dry = cli("submit", spec, "--cluster", "slurm", "--dry-run", "--run-id", "r")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"# dry run: slurm submission of {spec} (nothing submitted)\n#!/bin/bash\n")
    check = cli("spec", "check", spec)
    assert check.returncode == 0 and "of 80 GiB on a100-80gb" in check.stdout


def test_recipes_declare_their_size_and_layout():
    for spec, size, sharding, ckpt in (("jobs/train.yaml", "7b", "auto", False),
                                       ("jobs/train-13b.yaml", "13b", "hybrid", True),
                                       ("jobs/train-65b.yaml", "65b", "full", True)):
        loaded = load_spec(ROOT / spec)
        assert loaded.spec.train.model_size == size
        fsdp = loaded.layout.fsdp_config
        assert (fsdp.sharding, fsdp.fsdp_activation_checkpointing) == (sharding, ckpt)
        # one micro-step per optimizer step: no unsharded gradient accumulation
        assert memory.setup_of(loaded.spec, loaded.layout).micro_steps == 1
    t13 = load_spec(ROOT / "jobs/train-13b.yaml").spec.train
    assert (t13.learning_rate, t13.epochs, t13.global_batch_size, t13.max_length, t13.weight_decay) == \
        (1e-5, 5, 128, 512, 0.0)  # Stanford Alpaca's README, LLaMA-13B column


def _saved_bytes(layers: int, kv_heads: int, tokens: int = 512) -> tuple[int, object]:
    """Bytes autograd keeps for backward in a real transformers Llama (bf16, our attention and
    loss), parameters left out, each storage counted once."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alpaca_jobs.train import attention
    from alpaca_jobs.train.loading import LossModel

    cfg = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=layers, num_attention_heads=4,
               num_key_value_heads=kv_heads, vocab_size=1024)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16)
    attention.install(lm, "per_sequence")
    root = LossModel(lm)
    params = {p.untyped_storage().data_ptr() for p in root.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = max(kept.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    ids = torch.randint(0, 1024, (1, tokens))
    kw = attention.row_kwargs([tokens], "per_sequence", torch.device("cpu"), tokens)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = root(ids, torch.arange(tokens)[None], torch.arange(tokens - 1), ids[0, 1:], **kw)
    loss.backward()
    return sum(kept.values()), shape_from_config(cfg, "probe")


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_activation_bytes_are_what_autograd_keeps_in_a_real_llama(kv_heads):
    """Per token and layer (the difference of 3 layers and 1) within 1% of 20 d + 4 kv + 8 i,
    with as many KV heads as heads and with grouped KV heads; the whole model (layers, final
    norm, the loss's gradient buffers) within 2%."""
    tokens = 512
    one, shape = _saved_bytes(1, kv_heads, tokens)
    three, _ = _saved_bytes(3, kv_heads, tokens)
    per_layer = (three - one) / 2 / tokens
    assert per_layer == pytest.approx(memory.layer_activation_bytes(shape), rel=0.01)
    whole = (3 * memory.layer_activation_bytes(shape) + memory.final_norm_bytes(shape)) * tokens \
        + memory.loss_saved_bytes(shape, tokens - 1)
    assert three == pytest.approx(whole, rel=0.02)


def test_presets_have_known_shapes_on_a_gpu():
    """A preset on a GPU is checked with its own shape (SmolLM2-135M: the GGUF's, 134.5M)."""
    assert memory.preset_shape("smollm2-135m").params == 134_515_008
    loaded = load_spec(ROOT / "jobs/train-local.yaml", ["resources.gpus_per_node=2", "resources.gpu_type=a100-80gb",
                                                       "resources.processes_per_node=null"])
    line = loaded.derived()["memory_per_gpu"]
    assert line.startswith("1.32M (preset:tiny-llama) on 2 GPUs, full shard over 2: ") and "of 80 GiB" in line
