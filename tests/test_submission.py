"""The one submission path (alpaca_jobs/submission.py): the jobs run in this process
(`alpaca-jobs generate`, `alpaca-jobs evaluate`) go through one runner, record one backend
name and are held to cost.max_usd like a submission; a sweep is refused before any variant is
sent. Against the scripted teacher (tests/teacher.py), through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT, cli
from teacher import Teacher

from alpaca_jobs.submission import IN_PROCESS


def _generate_sets(tmp: Path, base_url: str, *extra: str) -> list[str]:
    sets = [f"runs_dir={tmp / 'runs'}", f"generate.api.base_url={base_url}", "generate.api.model=teacher",
            "generate.api.api=completions", "generate.tasks_per_request=6", "generate.max_requests=null",
            "generate.num_instructions=6", *extra]
    return [a for s in sets for a in ("--set", s)]


def _evaluate_spec(tmp: Path, base_url: str) -> Path:
    endpoint = {"base_url": base_url, "model": "teacher", "max_tokens": 16, "in_flight": 2,
                "api_key_env": "ALPACA_JOBS_LOCAL_KEY"}
    spec = {"job": "evaluate", "name": "eval-here", "runs_dir": str(tmp / "runs"),
            "layout": str(ROOT / "jobs/layouts/fsdp2-cpu.yaml"),
            "evaluate": {"instructions": str(ROOT / "seeds/user_oriented_eval.jsonl"), "max_instructions": 2,
                         "max_new_tokens": 16, "bootstrap_samples": 100,
                         "judge_prompt_file": str(ROOT / "jobs/prompts/judge-small.txt"),
                         "system_a": {"name": "one", "endpoint": endpoint},
                         "system_b": {"name": "two", "endpoint": {**endpoint, "temperature": 0}},
                         "judge": {**endpoint, "api": "completions", "temperature": 0, "max_tokens": 1}}}
    path = tmp / "evaluate.yaml"
    path.write_text(json.dumps(spec))
    return path


def _record(tmp: Path, run_id: str) -> dict:
    return json.loads((tmp / "runs" / run_id / "run.json").read_text())


def test_generate_and_evaluate_run_here_record_one_backend_name(tmp_path):
    with Teacher() as t:
        gen = cli("generate", str(ROOT / "jobs/generate-local.yaml"), *_generate_sets(tmp_path, t.base_url),
                  "--run-id", "gen-here")
        assert gen.returncode == 0, gen.stderr[-3000:]
        ev = cli("evaluate", str(_evaluate_spec(tmp_path, t.base_url)),
                 "--run-dir", str(tmp_path / "runs" / "eval-here"))
        assert ev.returncode == 0, ev.stdout[-2000:] + ev.stderr[-3000:]
    recs = [_record(tmp_path, "gen-here"), _record(tmp_path, "eval-here")]
    assert [(r["job"], r["status"], r["backend"]) for r in recs] == [
        ("generate", "completed", IN_PROCESS), ("evaluate", "completed", IN_PROCESS)]
    # Both said where they run and what they will cost before they started, as a submission does.
    for proc, run_id in ((gen, "gen-here"), (ev, "eval-here")):
        assert f"run {run_id}: {tmp_path / 'runs' / run_id}" in proc.stderr
        assert "cost: at most $" in proc.stderr
    listed = cli("list", "--runs-dir", str(tmp_path / "runs"), "--cluster", IN_PROCESS)
    assert listed.returncode == 0, listed.stderr
    assert {ln.split()[0] for ln in listed.stdout.splitlines()[1:] if ln.strip()} == {"gen-here", "eval-here"}


def test_a_run_here_is_held_to_cost_max_usd(tmp_path):
    """generate-local: 1 h x 2 cores, here priced at $100/core-h = $200 at most."""
    sets = _generate_sets(tmp_path, "http://127.0.0.1:9/v1", "cost.cpu_core_hour_usd=100", "cost.max_usd=10")
    r = cli("generate", str(ROOT / "jobs/generate-local.yaml"), *sets, "--run-id", "over")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: {ROOT / 'jobs/generate-local.yaml'}: cost.max_usd is $10.00 but this run "
                                "would cost at most (time limit) $200.00; lower resources.time_limit or the "
                                "work, raise cost.max_usd, or pass --over-budget")
    assert not (tmp_path / "runs" / "over").exists()
    with Teacher() as t:
        sets = _generate_sets(tmp_path, t.base_url, "cost.cpu_core_hour_usd=100", "cost.max_usd=10")
        r = cli("generate", str(ROOT / "jobs/generate-local.yaml"), *sets, "--run-id", "over", "--over-budget")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _record(tmp_path, "over")["status"] == "completed"


def test_a_sweep_with_one_variant_over_budget_sends_none(tmp_path):
    """Every variant is costed before any is sent: the second one's cap refuses them all."""
    r = cli("submit", "jobs/train-local.yaml", "--set", f"runs_dir={tmp_path / 'runs'}",
            "--set", "cost.cpu_core_hour_usd=100", "--sweep", "cost.max_usd=100,5", "--run-id", "sw")
    assert r.returncode == 2 and "cost.max_usd is $5.00" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
