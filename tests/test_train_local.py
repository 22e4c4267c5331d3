"""The training job end to end on the local backend: real submitit tasks, real FSDP2 over gloo.

One uninterrupted run of the embedded default (module fixture) is the yardstick for the
other tests: an interrupted-and-resumed run, a crashed-and-resumed run, and a plain Hugging
Face Trainer run must all reproduce its per-step losses.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, metrics

pytestmark = pytest.mark.integration
SPEC = str(ROOT / "jobs" / "train-local.yaml")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def baseline(runs) -> tuple[Path, str]:
    """`alpaca-jobs submit jobs/train-local.yaml`: the command `make submit-train` runs."""
    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "baseline")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return runs / "baseline", proc.stdout


def _losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in metrics(run_dir)]


def test_run_report_and_record(baseline):
    run_dir, out = baseline
    for label in ("GPU-hours", "CPU-hours", "cost", "throughput", "model"):
        assert f"\n{label}" in out, out
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["backend"] == "local" and rec["processes"] == 2
    assert rec["steps"] == rec["total_steps"] == 33  # ceil(175 / 16) x 3 epochs
    assert rec["gpu_hours"] == 0 and rec["cpu_seconds"] > 0 and rec["wall_seconds"] > 0
    assert 0 < rec["train_loop_seconds"] < rec["wall_seconds"]
    assert rec["tokens_per_second"] == pytest.approx(rec["tokens_trained"] / rec["train_loop_seconds"], rel=1e-3)
    assert rec["final_loss"] < rec["first_loss"] - 0.5  # it learned something
    assert rec["data"]["kept"] == 175
    assert rec["wall_seconds"] < 180  # the budget for the embedded default
    assert Path(rec["model_dir"]) == run_dir / "model"


def test_parameters_really_are_sharded(baseline):
    run_dir, _ = baseline
    rows = [json.loads(p.read_text()) for p in sorted((run_dir / "sharding").glob("rank*.json"))]
    assert [r["rank"] for r in rows] == [0, 1]
    total = rows[0]["global_numel"]
    assert all(r["distributed_type"].endswith("FSDP") for r in rows)
    assert all(r["local_numel"] < 0.6 * total for r in rows)  # each holds about half
    assert sum(r["local_numel"] for r in rows) == total  # together, exactly the model


def test_consolidated_model_loads_and_generates(baseline):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = baseline[0] / "model"
    assert list(model_dir.glob("*.safetensors"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert tok.pad_token == "[PAD]" and model.config.vocab_size == len(tok)
    ids = tok("### Instruction:\nName a fruit.\n\n### Response:\n", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert torch.isfinite(model(**ids).logits).all()
    # The serve job prompts a model we trained in the Alpaca format it learned.
    from alpaca_jobs.serve.engine import Engine

    engine = Engine(model_dir, watermark=None)
    from alpaca_jobs.common.template import format_prompt
    from alpaca_jobs.spec import load_spec

    pre = load_spec(ROOT / SPEC).spec.train.prompt
    prompt = engine.chat_prompt([{"role": "user", "content": "Name a fruit."}])
    assert prompt == engine.tok.bos_token + format_prompt("Name a fruit.", "", pre.preamble_with_input,
                                                         pre.preamble_no_input)
    with_input = engine.chat_prompt([{"role": "user", "content": "Translate."}], "Bonjour")
    assert with_input.endswith("### Instruction:\nTranslate.\n\n### Input:\nBonjour\n\n### Response:\n")
    assert pre.preamble_with_input in with_input  # the with-input template, not the input folded in


def test_status_and_logs_commands(baseline, runs):
    st = cli("status", "baseline", "--runs-dir", str(runs))
    assert st.returncode == 0 and "baseline: COMPLETED (local job" in st.stdout
    lg = cli("logs", "baseline", "--runs-dir", str(runs))
    assert "step 33/33 loss" in lg.stdout and "ETA 00:00" in lg.stdout
    # What it does before step 1 is said, in order, in the log (no silent start).
    said = ["train job baseline: started", "preparing the base model", "loading the tokenizer",
            "model ready", "training from step 0 of 33", "step 1/33 loss", "training completed"]
    at = [lg.stdout.find(s) for s in said]
    assert -1 not in at and at == sorted(at), dict(zip(said, at, strict=True))
    assert (runs / "baseline" / "loss.png").is_file() and (runs / "baseline" / "summary.html").is_file()


def test_matches_a_plain_hf_trainer_run(baseline, tmp_path):
    """Fidelity: our packed 2-process FSDP loop vs HF Trainer, padded, one process (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alpaca_jobs.model_dirs import resolve_base_model
    from alpaca_jobs.spec import load_spec
    from alpaca_jobs.train.data import build_examples
    from alpaca_jobs.train.models import add_pad_token
    from bench.reference import trainer_losses

    loaded = load_spec(SPEC)
    cfg = loaded.spec.train
    base = resolve_base_model(cfg.base_model, str(ROOT / cfg.data))
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    add_pad_token(tok, model)
    examples, _ = build_examples(ROOT / cfg.data, tok, cfg.max_length,
                                 (cfg.prompt.preamble_with_input, cfg.prompt.preamble_no_input))
    theirs, _, _ = trainer_losses(loaded, model, tok, examples, tmp_path)
    ours = _losses(baseline[0])
    assert len(ours) == len(theirs) == 33
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True))
    assert worst < 1e-4, f"worst relative difference {worst:.2e}"


def _wait_for(pred, timeout=120.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start(runs: Path, run_id: str, *extra: str) -> Path:
    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--set", "train.checkpoint_every_steps=4",
               "--run-id", run_id, "--no-wait", *extra)
    assert proc.returncode == 0, proc.stderr
    return runs / run_id


def test_sigterm_checkpoints_and_resume_is_exact(baseline, runs):
    run_dir = _start(runs, "interrupted")
    _wait_for(lambda: len(metrics(run_dir)) >= 6, what="6 steps")
    assert cli("cancel", "interrupted", "--runs-dir", str(runs)).returncode == 0
    _wait_for(lambda: "INTERRUPTED" in cli("status", "interrupted", "--runs-dir", str(runs)).stdout,
              what="INTERRUPTED")
    stopped_at = len(metrics(run_dir))
    assert 6 <= stopped_at < 33
    latest = (run_dir / "checkpoints" / "latest").read_text()
    assert latest == f"step-{stopped_at:06d}"  # checkpointed where it stopped, not at the last multiple of 4
    again = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "interrupted")
    assert again.returncode == 0 and "resuming from its last checkpoint" in again.stdout, again.stderr
    assert _losses(run_dir) == _losses(baseline[0])  # bit-exact
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["attempts"] == 2


def test_one_process_trains_unsharded_and_resumes_exactly(baseline, runs):
    """One process at one precision: no FSDP wrapping (it would shard nothing), the same
    losses as the 2-process FSDP baseline, and checkpoints of the plain model resume exactly."""
    one = ("--set", "resources.processes_per_node=1")
    whole = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "one-whole", *one)
    assert whole.returncode == 0, whole.stderr
    row = json.loads((runs / "one-whole" / "sharding" / "rank0.json").read_text())
    assert row["world"] == 1 and row["distributed_type"] == "NO"
    assert row["local_numel"] == row["global_numel"]
    reference = _losses(runs / "one-whole")
    worst = max(abs(a - b) / abs(b) for a, b in zip(reference, _losses(baseline[0]), strict=True))
    assert worst < 1e-4, f"1 process vs 2: worst relative loss difference {worst:.2e}"

    run_dir = _start(runs, "one-cut", *one)
    _wait_for(lambda: len(metrics(run_dir)) >= 6, what="6 steps")
    assert cli("cancel", "one-cut", "--runs-dir", str(runs)).returncode == 0
    _wait_for(lambda: "INTERRUPTED" in cli("status", "one-cut", "--runs-dir", str(runs)).stdout,
              what="INTERRUPTED")
    assert len(metrics(run_dir)) < 33
    again = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "one-cut", *one)
    assert again.returncode == 0 and "resuming from its last checkpoint" in again.stdout, again.stderr
    assert _losses(run_dir) == reference  # bit-exact


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_crash_resumes_from_last_periodic_checkpoint(baseline, runs):
    run_dir = _start(runs, "crashed")
    _wait_for(lambda: len(metrics(run_dir)) >= 10, what="10 steps")
    controller = int(json.loads((run_dir / "handle.json").read_text())["job_id"])
    for pid in _children(controller) + [controller]:
        os.kill(pid, signal.SIGKILL)  # no chance to checkpoint: a node dying
    assert (run_dir / "checkpoints" / "latest").read_text() in {"step-000008", "step-000012"}
    assert len(metrics(run_dir)) > 8
    again = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "crashed")
    assert again.returncode == 0, again.stderr
    assert _losses(run_dir) == _losses(baseline[0])
    assert json.loads((run_dir / "run.json").read_text())["attempts"] == 2


def test_checkpoints_by_wall_clock_interval_are_written_asynchronously(runs):
    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--set", "train.max_steps=12",
               "--set", "train.checkpoint_interval_minutes=0.0001", "--run-id", "interval")
    assert proc.returncode == 0, proc.stderr
    run_dir = runs / "interval"
    # Due at every agreement (each 5 steps); step 10 is also checkpoint_every_steps.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step-000005", "step-000010"]
    assert not list((run_dir / "checkpoints").glob("*.partial"))
    saved = json.loads((run_dir / "checkpoints" / "step-000010" / "trainer_state.json").read_text())
    assert saved["loop"]["step"] == 10 and len(saved["loop"]["losses"]) == 10
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["checkpoint_seconds"] > 0 and rec["train_loop_seconds"] > 0
    assert rec["checkpoint_seconds"] + rec["train_loop_seconds"] < rec["wall_seconds"]


def test_bad_inputs_fail_before_any_process_starts(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{broken\n')
    proc = cli("submit", SPEC, "--set", f"runs_dir={tmp_path}/runs", "--set", f"train.data={bad}")
    assert proc.returncode == 2 and "bad.jsonl:2: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("submit", SPEC, "--set", f"runs_dir={tmp_path}/runs", "--set", f"train.base_model={tmp_path}/llama-7b")
    assert proc.returncode == 2 and "train.base_model:" in proc.stderr and "is not a directory" in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_layout_options_activation_checkpointing_and_layer_class_are_honoured(baseline, runs, tmp_path):
    """Recomputing activations changes memory, not maths: the first steps' losses are the
    baseline's. A layer class the model does not have is refused, naming the layout field."""
    import yaml

    layout = yaml.safe_load((ROOT / "jobs/layouts/fsdp2-cpu.yaml").read_text())
    layout["fsdp_config"]["fsdp_activation_checkpointing"] = True
    path = tmp_path / "ac.yaml"
    path.write_text(yaml.safe_dump(layout))
    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--set", f"layout={path}",
               "--set", "train.max_steps=3", "--run-id", "ac")
    assert proc.returncode == 0, proc.stderr
    assert _losses(runs / "ac") == pytest.approx(_losses(baseline[0])[:3], rel=1e-6)
    layout["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] = "GPT2Block"
    path.write_text(yaml.safe_dump(layout))
    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--set", f"layout={path}",
               "--set", "train.max_steps=1", "--run-id", "wrong-class")
    assert proc.returncode != 0
    assert "fsdp_transformer_layer_cls_to_wrap: 'GPT2Block' is not a module class" in proc.stderr + proc.stdout


def test_the_model_directory_works_in_plain_transformers(baseline):
    """The trained model loads with plain transformers; its chat template renders exactly the
    prompt the trainer trained on (with and without an input); no setting of this machine is
    saved; a model card says how it was made and what it cost."""
    import json

    import torch
    from transformers import AutoTokenizer, pipeline

    from alpaca_jobs.common.template import format_prompt
    from alpaca_jobs.spec import load_spec

    run_dir, _ = baseline
    model_dir = run_dir / "model"
    cfg = load_spec(ROOT / SPEC).spec.train
    saved = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert "local_files_only" not in saved and saved["model_max_length"] == cfg.max_length
    tok = AutoTokenizer.from_pretrained(model_dir)
    pre = (cfg.prompt.preamble_with_input, cfg.prompt.preamble_no_input)
    for instruction, given in (("Name three primary colours.", ""), ("Translate to French.", "Good morning")):
        ids = tok.apply_chat_template([{"role": "user", "content": instruction}], input=given,
                                      add_generation_prompt=True, tokenize=True)
        ids = list(ids if isinstance(ids, list) else ids["input_ids"])
        assert ids == tok.encode(format_prompt(instruction, given, *pre), add_special_tokens=True)
    gen = pipeline("text-generation", model=str(model_dir), dtype=torch.float32)
    out = gen([{"role": "user", "content": "Name three primary colours."}], max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    card = (model_dir / "README.md").read_text()
    rec = json.loads((run_dir / "run.json").read_text())
    assert f"run `{rec['run_id']}`" in card and "GPU-hours" in card and cfg.data in card


def test_tensorboard_tracker_logs_each_step(runs):
    """train.trackers=[tensorboard]: rank 0 logs every step's loss through accelerate's tracker;
    the event file holds exactly the losses of metrics.jsonl."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "tracked", "--set", "train.max_steps=3",
               "--set", "train.trackers=[tensorboard]")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    logged = [json.loads(x)["loss"] for x in (runs / "tracked" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(next((runs / "tracked" / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    scalars = events.Scalars("loss")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert [round(s.value, 4) for s in scalars] == [round(x, 4) for x in logged]


def test_a_running_training_job_pushes_its_steps_and_loss(runs, tmp_path):
    """The live metric pushes of a train job carry the steps done, the total and the latest loss
    while it runs (node_exporter textfile sink), and the final record replaces them."""
    from prometheus_client.parser import text_string_to_metric_families

    from alpaca_jobs.ops import metrics as prom_metrics

    textfiles = tmp_path / "textfile"
    env = {prom_metrics.TEXTFILE_DIR_ENV: str(textfiles), "ALPACA_JOBS_METRICS_INTERVAL": "0.3"}
    proc = cli("submit", SPEC, "--set", f"runs_dir={runs}", "--run-id", "live", "--no-wait", env=env)
    assert proc.returncode == 0, proc.stderr
    prom = prom_metrics.textfile_path(textfiles, "live")

    def sample() -> dict:
        try:
            text = prom.read_text()
        except FileNotFoundError:
            return {}
        return {(s.name, s.labels.get("status")): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    seen: list[dict] = []

    def running_with_steps() -> bool:
        s = sample()
        if s.get(("alpaca_job_status", "running")) == 1.0 and s.get(("alpaca_job_steps", None), 0) >= 2:
            seen.append(s)
            return True
        return False

    _wait_for(running_with_steps, timeout=300, what="a running push with steps")
    live = seen[0]
    assert live[("alpaca_job_total_steps", None)] == 33
    assert 2 <= live[("alpaca_job_steps", None)] < 33
    assert 0 < live[("alpaca_job_loss", None)] < 20 and live[("alpaca_job_tokens_trained_total", None)] > 0
    _wait_for(lambda: sample().get(("alpaca_job_status", "completed")) == 1.0, timeout=300, what="completed")
    final = sample()
    rec = json.loads((runs / "live" / "run.json").read_text())
    assert final[("alpaca_job_steps", None)] == 33
    assert final[("alpaca_job_loss", None)] == pytest.approx(rec["final_loss"])
