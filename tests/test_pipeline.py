"""The pipeline: the four jobs chained through files, on the local backend end to end (the
Slurm and Kubernetes suites run the same chain as dependent cluster jobs: test_slurm.py,
test_k8s.py). The teacher and judge here is the scripted teacher (tests/teacher.py, standing
for a paid API); the model is tiny-llama so the chain runs in about a minute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, cli
from teacher import Teacher

from alpaca_jobs.common.errors import SpecError
from alpaca_jobs.pipeline.spec import load_pipeline


def small_pipeline(tmp: Path, teacher_url: str, extra: list[str] = (), port: int | None = None,
                   name: str = "pipe-test") -> Path:
    """The smallest pipeline: 24 generated tasks, 4 training steps of tiny-llama, a served
    result (when ``port``), 3 judged items."""
    runs = str(tmp / "runs")
    common = [f"runs_dir={runs}", *extra]
    stages = {
        "generate": {"spec": str(ROOT / "jobs/generate-local.yaml"), "set": [
            "generate.api.base_url=${teacher.url}", "generate.api.model=${teacher.model}",
            "generate.num_instructions=24", "generate.max_requests=null", *common]},
        "train": {"spec": str(ROOT / "jobs/train-local.yaml"), "set": [
            "train.data=${generate.data}", "train.max_steps=4", "train.checkpoint_every_steps=2",
            "resources.time_limit=00:10:00", *common]},
        "evaluate": {"spec": str(ROOT / "jobs/evaluate-local.yaml"), "set": [
            "evaluate.system_a={name: fine-tuned, model_dir: '${train.model}'}",
            "evaluate.system_b={name: base, model_dir: 'preset:tiny-llama'}",
            "evaluate.judge={base_url: '${teacher.url}', model: '${teacher.model}', api: completions, "
            "temperature: 0, max_tokens: 1, api_key_env: ALPACA_JOBS_LOCAL_KEY}",
            f"evaluate.judge_prompt_file={ROOT / 'jobs/prompts/judge-small.txt'}",
            "evaluate.max_instructions=3", "evaluate.max_new_tokens=12", "evaluate.bootstrap_samples=200",
            *common]},
    }
    if port:
        stages["serve"] = {"spec": str(ROOT / "jobs/serve-local.yaml"), "set": [
            # A 4-step tiny model repeats itself (low entropy): a stronger bias than the default
            # delta 2.0 keeps its watermark detectable in a few hundred tokens.
            "serve.model=${train.model}", "serve.watermark_delta=4.0", f"serve.port={port}", f"serve.flags_db={tmp}/flags.sqlite3", *common]}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"pipeline": name, "runs_dir": runs,
                                    "teacher": {"url": teacher_url, "model": "teacher"},
                                    "stages": stages}, sort_keys=False))
    return path


def check_outputs(runs: Path, pid: str, teacher: Teacher) -> dict:
    """What every backend's chain must leave behind, stage by stage."""
    summary = json.loads((runs / pid / "summary.json").read_text())
    st = summary["stages"]
    gen = st["generate"]["record"]["results"]
    data = json.loads((runs / f"{pid}-generate" / "alpaca_data.json").read_text())
    assert gen["kept"] == len(data) >= 24
    train = st["train"]["record"]
    assert train["status"] == "completed" and train["steps"] == 4
    assert train["data"]["records_read"] == len(data)  # trained on exactly the generated file
    assert (runs / f"{pid}-train" / "model" / "config.json").is_file()
    ev = st["evaluate"]["record"]["results"]
    assert st["evaluate"]["status"] == "COMPLETED"
    assert ev["wins"] + ev["ties"] + ev["losses"] + ev.get("invalid", 0) == 3
    assert 0 <= ev["win_rate"] <= 1
    assert summary["total"]["wall_seconds"] == pytest.approx(
        sum(s["wall_seconds"] for s in st.values()), abs=0.01)
    return summary


def test_pipeline_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("pipeline: p\nstages:\n  train: {spec: train-local.yaml, set: ['train.data=${generate.data}']}\n")
    with pytest.raises(SpecError, match=r"stages.train: \$\{generate.data\} refers to a stage that does not run"):
        load_pipeline(bad)
    bad.write_text("pipeline: p\nstages:\n  tune: {spec: x.yaml}\n")
    with pytest.raises(SpecError, match="unknown stage.*tune"):
        load_pipeline(bad)
    bad.write_text("pipeline: p\nstages:\n  generate: {spec: g.yaml, set: ['generate.api.base_url=${teacher.url}']}\n")
    with pytest.raises(SpecError, match="needs a teacher section"):
        load_pipeline(bad)
    r = cli("pipeline", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_checked_in_pipelines_load():
    for name in ("pipeline-local.yaml", "pipeline.yaml"):
        p = load_pipeline(ROOT / "jobs" / name)
        assert p.order == ["generate", "train", "serve", "evaluate"]


@pytest.mark.integration
def test_local_pipeline_end_to_end_then_resume_repeats_nothing(tmp_path):
    from test_serve import _free_port

    with Teacher(n_tasks=8) as t:
        path = small_pipeline(tmp_path, t.base_url, port=_free_port())
        r = cli("pipeline", str(path), "--run-id", "p", timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        summary = check_outputs(tmp_path / "runs", "p", t)
        wm = summary["checks"]["watermark"]
        assert wm["served_output"]["watermarked"] and not wm["human_text"]["watermarked"]
        for line in ("data ", "training ", "watermark ", "evaluation ", "total "):
            assert line in r.stdout
        requests = t.requests
        # Re-running finished work: nothing is asked again, nothing retrained.
        again = cli("pipeline", str(path), "--run-id", "p", timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert t.requests == requests
        assert "[generate] p-generate: completed before; reusing its outputs" in again.stdout
        assert "[train] p-train: completed before" in again.stdout
    status = cli("status", "p", "--runs-dir", str(tmp_path / "runs"))
    assert status.returncode == 0 and "Alpaca pipeline p (local)" in status.stdout
    assert "evaluate" in status.stdout and "COMPLETED" in status.stdout


@pytest.mark.integration
def test_a_failed_stage_stops_the_chain_with_its_reason_and_a_rerun_goes_on(tmp_path):
    with Teacher(n_tasks=8, key="sk-right") as t:
        path = small_pipeline(tmp_path, t.base_url)
        r = cli("pipeline", str(path), "--run-id", "f", env={"ALPACA_JOBS_TEACHER_KEY": "sk-wrong"})
        assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
        assert "[generate] ended FAILED" in r.stdout and "HTTP 401" in r.stdout
        assert "re-run with --run-id f" in r.stderr
        assert not (tmp_path / "runs" / "f-train").exists()  # nothing after the failed stage ran
        keys = {"ALPACA_JOBS_TEACHER_KEY": "sk-right", "ALPACA_JOBS_LOCAL_KEY": "sk-right"}  # teacher, judge
        again = cli("pipeline", str(path), "--run-id", "f", env=keys, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        check_outputs(tmp_path / "runs", "f", t)
    assert "sk-right" not in "".join(f.read_text(errors="replace") for f in (tmp_path / "runs").rglob("*")
                                     if f.is_file() and f.suffix in (".json", ".jsonl", ".out", ".err"))


def _teacher_pipeline(tmp: Path, port: int, stage_sets: dict[str, list[str]], teacher_sets: list[str] = ()) -> Path:
    """A pipeline that starts its own teacher (a serve job on ``port``), CPU core-hours priced
    at $100 so every bound is dollars; ``stage_sets``: extra overrides per stage."""
    priced = ["cost.cpu_core_hour_usd=100", f"runs_dir={tmp / 'runs'}"]
    stages = {
        "generate": {"spec": str(ROOT / "jobs/generate-local.yaml"), "set": [
            "generate.api.base_url=${teacher.url}", "generate.api.model=${teacher.model}", *priced]},
        "train": {"spec": str(ROOT / "jobs/train-local.yaml"), "set": ["train.data=${generate.data}", *priced]},
        "serve": {"spec": str(ROOT / "jobs/serve-local.yaml"), "set": [
            "serve.model=${train.model}", f"serve.port={port + 1}", *priced]},
    }
    for stage, sets in stage_sets.items():
        stages[stage]["set"] += sets
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "pipeline": "pipe-budget", "runs_dir": str(tmp / "runs"),
        "teacher": {"spec": str(ROOT / "jobs/serve-local.yaml"),
                    "set": [f"serve.port={port}", f"serve.flags_db={tmp}/teacher-flags.sqlite3", *priced,
                            *teacher_sets]},
        "stages": stages}, sort_keys=False))
    return path


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_pipeline_over_budget_is_refused_before_anything_starts(tmp_path):
    """Every stage (and the teacher) is costed and held to its cost.max_usd before the first
    starts: a later stage over its cap stops the pipeline with one line naming the stage, its
    figure and the cap, leaving no run dir, no stage and no teacher behind."""
    from test_serve import _free_port

    port = _free_port()
    # train-local: 20 min x 2 cores x $100/core-h = $66.67 at most (its data does not exist yet)
    path = _teacher_pipeline(tmp_path, port, {"train": ["cost.max_usd=5"]})
    r = cli("pipeline", str(path), "--run-id", "b", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert err[0] == (f"error: {path}: stages.train ({ROOT / 'jobs/train-local.yaml'}): cost.max_usd is $5.00 "
                      "but this run would cost at most (time limit) $66.67; lower resources.time_limit or "
                      "the work, raise cost.max_usd, or pass --over-budget")
    assert not (tmp_path / "runs").exists()  # no pipeline dir, no stage run dir, no teacher run dir
    assert "submitted" not in r.stdout and "[teacher] serving" not in r.stdout
    assert not _listening(port)  # no teacher server
    # The teacher is held to its own spec's cap too (a server: its time limit's worth, 8 h x 2 cores).
    path = _teacher_pipeline(tmp_path, port, {}, teacher_sets=["cost.max_usd=100"])
    r = cli("pipeline", str(path), "--run-id", "b", timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {path}: teacher: cost.max_usd is $100.00 but "
                                                     "this run would cost at most (time limit) $1600.00")
    assert not (tmp_path / "runs").exists() and not _listening(port)


@pytest.mark.integration
def test_over_budget_lets_a_pipeline_start_and_says_each_stage_cost_first(tmp_path):
    """--over-budget lifts every stage's cap; the costs are said before the first stage starts.
    (The generate stage then fails on a wrong key: no more is needed to see it started.)"""
    with Teacher(n_tasks=8, key="sk-right") as t:
        path = small_pipeline(tmp_path, t.base_url, extra=["cost.cpu_core_hour_usd=100", "cost.max_usd=1"])
        env = {"ALPACA_JOBS_TEACHER_KEY": "sk-wrong"}
        refused = cli("pipeline", str(path), "--run-id", "o", env=env)
        assert refused.returncode == 2 and ": stages.generate (" in refused.stderr
        assert not (tmp_path / "runs").exists()
        r = cli("pipeline", str(path), "--run-id", "o", "--over-budget", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    out = r.stdout.splitlines()
    costs = [i for i, ln in enumerate(out) if " cost: at most $" in ln]
    assert [out[i].split("]")[0] for i in costs] == ["[generate", "[train", "[evaluate"]
    # The training data is not made yet: said so, not "not readable" (a kind with no expected
    # figure, evaluate here, says nothing of the kind).
    assert out[costs[1] + 1] == "[train] expected: unknown (${generate.data} is made by stage generate, " \
                                "which has not run yet)", out
    assert "expected" not in out[costs[2] + 1]
    started = next(i for i, ln in enumerate(out) if ln.startswith("[generate] submitted o-generate"))
    assert max(costs) < started
    assert "[generate] ended FAILED" in r.stdout and "HTTP 401" in r.stdout
