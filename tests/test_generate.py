"""The generate job: prompt and parser, filters, seeds, and the job itself through the real
openai client against real HTTP servers (a scripted teacher standing for a paid API, and this
project's own serve job with SmolLM2), including kills, retries and the budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SEEDS, cli
from teacher import Teacher

from alpaca_jobs.generate.parse import Candidate, parse_reply, text_filter
from alpaca_jobs.generate.prompt import build_prompt, request_examples
from alpaca_jobs.generate.seeds import load_seeds

SPEC = ROOT / "jobs" / "generate-local.yaml"


def _sets(tmp: Path, base_url: str, **extra) -> list[str]:
    sets = {"runs_dir": str(tmp / "runs"), "generate.api.base_url": base_url,
            "generate.api.model": "teacher", "generate.api.api": "completions",
            "generate.api.backoff_seconds": 0.05, "generate.tasks_per_request": 6,
            "generate.max_requests": None, **extra}
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={'null' if v is None else v}"]
    return out


def _record(tmp: Path, run_id: str) -> dict:
    return json.loads((tmp / "runs" / run_id / "run.json").read_text())


# -- prompt, parser, filters, seeds -------------------------------------------------------

def test_prompt_has_numbered_examples_and_ends_at_the_next_instruction():
    seeds = load_seeds(SEEDS)
    picks = request_examples(seeds, 3, 42, 7)
    assert picks == request_examples(seeds, 3, 42, 7) != request_examples(seeds, 3, 42, 8)
    prompt = build_prompt([seeds[i] for i in picks], 20)
    assert "20 new and varied tasks" in prompt
    assert prompt.count("###\n") == 4 and prompt.endswith("###\n4. Instruction:")
    for n in (1, 2, 3):
        assert f"\n{n}. Instruction: " in prompt and f"\n{n}. Input:\n" in prompt
        assert f"\n{n}. Output:\n" in prompt
    no_input = [seeds[i] for i in picks if not seeds[i].input]
    assert prompt.count("<noinput>") >= len(no_input)


def test_parser_reads_blocks_noinput_and_drops_a_cut_off_last_block():
    reply = (" Name three primary colours.\n4. Input:\n<noinput>\n4. Output:\nRed, blue, yellow.\n"
             "###\n5. Instruction: Summarize the text in one sentence.\n5. Input:\nCats sleep a lot.\n"
             "5. Output:\nCats sleep much.\n###\n6. Instruction: Explain why the sky")
    full = parse_reply(reply, 4, "length")
    assert full.candidates == [Candidate("Name three primary colours.", "", "Red, blue, yellow."),
                               Candidate("Summarize the text in one sentence.", "Cats sleep a lot.",
                                         "Cats sleep much.")]
    assert [r for r, _ in full.rejected] == ["truncated"]
    # Not cut off: the last block is parsed (here it lacks fields: malformed, counted).
    assert [r for r, _ in parse_reply(reply, 4, "stop").rejected] == ["malformed_block"]
    # A chat model that restates the number, and forgets ###, parses the same.
    chat = "4. Instruction: Name three primary colours.\n4. Input:\n<noinput>\n4. Output:\nRed.\n" \
           "5. Instruction: Give a synonym for happy.\n5. Input:\n<noinput>\n5. Output:\nGlad."
    assert [c.instruction for c in parse_reply(chat, 4, "stop").candidates] == [
        "Name three primary colours.", "Give a synonym for happy."]
    assert parse_reply("I cannot do that.", 4, "stop").candidates == []


@pytest.mark.parametrize("instruction,reason", [
    ("Add two numbers.", "too_short"),
    ("word " * 151, "too_long"),
    ("Describe the image below in detail please.", "blocked_word"),
    ("Please GO TO the store and buy milk.", "blocked_word"),
    ("Make a Flowchart of your morning routine.", "blocked_word"),
    ("Write a program that sorts a list.", "write_a_program"),
    ("- Give me a list of fruits please.", "starts_with_punctuation"),
    ("Él quiere saber la hora exacta.", "starts_non_ascii"),
    ("Explain how mapping functions work in Python.", None),  # "mapping" is not "map"
    ("Summarize the profile of this person.", None),  # "profile" is not "file"
])
def test_text_filters(instruction, reason):
    assert text_filter(Candidate(instruction.strip(), "", "An answer.")) == reason


def test_seed_files_ours_and_upstream_format(tmp_path):
    assert len(load_seeds(SEEDS)) == 175
    upstream = tmp_path / "upstream.jsonl"  # self-instruct's seed layout, one task a line
    upstream.write_text(json.dumps({"id": "seed_task_0", "name": "breakfast_suggestion",
                                    "instruction": "Is there anything I can eat for breakfast?",
                                    "instances": [{"input": "", "output": "Yes, oatmeal."}],
                                    "is_classification": False}) + "\n")
    assert load_seeds(upstream)[0].output == "Yes, oatmeal."


def test_malformed_seed_file_is_refused_naming_the_line(tmp_path):
    bad = tmp_path / "seeds.jsonl"
    lines = SEEDS.read_text().splitlines()[:5]
    lines[3] = '{"instruction": "Say hi.", "instances": "oops"}'
    bad.write_text("\n".join(lines) + "\n")
    r = cli("generate", str(SPEC), "--set", f"generate.seeds={bad}", "--set", f"runs_dir={tmp_path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{bad}:4: 'instances' must be a non-empty list" in r.stderr


# -- the job, against the scripted teacher ------------------------------------------------

@pytest.mark.parametrize("api", ["completions", "chat"])
def test_generate_writes_training_data_and_reports_counts(tmp_path, api):
    with Teacher(repeat_every=3) as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{"generate.num_instructions": 12,
                                                                        "generate.api.api": api}),
                "--run-id", "g")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "g"
    data = json.loads((run / "alpaca_data.json").read_text())
    rec = _record(tmp_path, "g")
    res = rec["results"]
    assert len(data) == res["kept"] >= 12 and res["stop_reason"] == "target reached"
    assert all(set(d) == {"instruction", "input", "output"} for d in data)
    assert res["rejected"].get("similar", 0) >= 1  # the teacher repeats itself on purpose
    assert res["kept"] + sum(res["rejected"].values()) - res["rejected"].get("truncated", 0) \
        - res["rejected"].get("malformed_block", 0) == res["candidates"]
    raw = (run / "raw.jsonl").read_text().splitlines()
    assert len(raw) == rec["api"]["requests"] == res["responses"] == t.requests
    assert rec["api"]["input_tokens"] > 0 and rec["api_cost_usd"] == 0.0  # self-hosted: no price
    details = [json.loads(x) for x in (run / "instructions.jsonl").read_text().splitlines()]
    assert all(0 <= d["avg_similarity_score"] <= 1 and len(d["most_similar_instructions"]) == 10
               for d in details)
    # The training job reads the file as it is.
    from alpaca_jobs.train.data import read_records

    assert len(read_records(str(run / "alpaca_data.json"))) == len(data)
    assert "kept" in r.stdout and "rejected" in r.stdout


def test_retries_honour_retry_after_then_succeed(tmp_path):
    faults = [(429, {"Retry-After": "1"}), (500, {}), (503, {"retry-after-ms": "200"})]
    with Teacher(faults=faults) as t:
        t0 = time.monotonic()
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 3, "generate.api.in_flight": 1}), "--run-id", "r")
        took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    rec = _record(tmp_path, "r")
    assert rec["api"]["retries"] == 3 and rec["api"]["requests"] == 1
    assert took >= 1.2  # Retry-After: 1 s and 200 ms were waited out
    assert "HTTP 429, retry 1/5" in r.stdout + r.stderr


def test_slow_replies_time_out_and_are_retried_then_give_up(tmp_path):
    with Teacher(faults=[(0, {"sleep": 3})] * 3) as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 3, "generate.api.in_flight": 1,
            "generate.api.timeout_seconds": 0.5, "generate.api.max_attempts": 3}), "--run-id", "s")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "gave up after 3 attempts (APITimeoutError)" in r.stderr
    assert _record(tmp_path, "s")["status"] == "failed"


def test_bad_key_stops_at_once_and_the_key_is_nowhere(tmp_path):
    secret = "sk-test-DO-NOT-LEAK-4242"
    with Teacher(key="another-key") as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{"generate.api.in_flight": 1}),
                "--run-id", "k",
                env={"ALPACA_JOBS_TEACHER_KEY": secret})
        assert t.requests == 1  # a 401 is not retried
    assert r.returncode == 2 and "HTTP 401" in r.stderr and "ALPACA_JOBS_TEACHER_KEY was refused" in r.stderr
    assert "Traceback" not in r.stderr
    for f in (tmp_path / "runs").rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f


def test_unparseable_replies_are_counted_and_logged_never_fatal(tmp_path):
    with Teacher(garbage=True) as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{"generate.max_requests": 3}),
                "--run-id", "u")
    assert r.returncode == 0, r.stderr
    res = _record(tmp_path, "u")["results"]
    assert res["unparseable_responses"] == 3 and res["kept"] == 0
    assert res["stop_reason"] == "max_requests reached"
    raw = [json.loads(x) for x in (tmp_path / "runs" / "u" / "raw.jsonl").read_text().splitlines()]
    assert [e["text"] for e in raw] == ["I am sorry, I cannot help with lists today."] * 3


def test_budget_stops_before_it_would_be_exceeded(tmp_path):
    # $1000 per 1M tokens either way: a request costs ~$0.7, at worst (its prompt x 1.25 +
    # 256 tokens out) ~$1: with two in flight the job stops after a few requests, under $2.
    with Teacher() as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 1000, "generate.max_usd": 2.0, "generate.api.in_flight": 2,
            "generate.api.input_usd_per_mtok": 1000, "generate.api.output_usd_per_mtok": 1000}),
            "--run-id", "b")
    assert r.returncode == 0, r.stderr
    rec = _record(tmp_path, "b")
    assert rec["results"]["stop_reason"] == "budget (max_usd) reached"
    assert 0.5 < rec["api_cost_usd"] <= 2.0 and rec["api"]["requests"] >= 1
    assert rec["results"]["kept"] < 1000


def test_killed_mid_run_resumes_without_repeating_paid_requests(tmp_path):
    with Teacher(delay=0.4, repeat_every=4) as t:
        args = [sys.executable, "-m", "alpaca_jobs", "generate", str(SPEC),
                *_sets(tmp_path, t.base_url, **{"generate.num_instructions": 40,
                                                 "generate.api.in_flight": 2}), "--run-id", "kill"]
        raw = tmp_path / "runs" / "kill" / "raw.jsonl"
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        end = time.time() + 120
        while time.time() < end and (not raw.is_file() or len(raw.read_text().splitlines()) < 4):
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        logged = [json.loads(x)["index"] for x in raw.read_text().splitlines()]
        assert len(logged) >= 4
        with open(raw, "a") as fh:  # a line torn by the kill
            fh.write('{"index": 999, "text": "half a rep')
        seen_before = len(t.seeds_seen)
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        asked_after = [s - 42 for s in t.seeds_seen[seen_before:]]  # seed = generate.seed + index
    assert not set(asked_after) & set(logged)  # no reply that was received is paid for twice
    entries = [json.loads(x) for x in raw.read_text().splitlines()]
    indices = [e["index"] for e in entries]
    assert len(indices) == len(set(indices)) and indices[:len(logged)] == logged
    rec = _record(tmp_path, "kill")
    assert rec["results"]["replayed_responses"] == len(logged)
    data = json.loads((tmp_path / "runs" / "kill" / "alpaca_data.json").read_text())
    instructions = [d["instruction"] for d in data]
    assert len(instructions) == len(set(instructions)) >= 40
    from alpaca_jobs.generate.rouge import Deduper

    pool = Deduper()
    assert all(pool.consider(i).keep for i in instructions)  # no near-duplicates slipped in


# -- the job, against this project's serve job (SmolLM2) ----------------------------------

@pytest.mark.integration
def test_generate_through_the_serve_job(tmp_path):
    from test_serve import MODEL, running_server

    with running_server(tmp_path, {"ALPACA_JOBS_WATERMARK_KEY": "k"}) as base:
        r = cli("generate", str(SPEC), "--set", f"runs_dir={tmp_path / 'runs'}",
                "--set", f"generate.api.base_url={base}/v1", "--set", f"generate.api.model={MODEL}",
                "--set", "generate.max_requests=3", "--set", "generate.api.max_tokens=96",
                "--run-id", "smol")
    assert r.returncode == 0, r.stderr
    rec = _record(tmp_path, "smol")
    res = rec["results"]
    assert rec["api"]["requests"] == res["responses"] == 3 and rec["api"]["output_tokens"] > 0
    raw = [json.loads(x) for x in (tmp_path / "runs" / "smol" / "raw.jsonl").read_text().splitlines()]
    assert len(raw) == 3 and all(e["text"] for e in raw)
    data = json.loads((tmp_path / "runs" / "smol" / "alpaca_data.json").read_text())
    assert len(data) == res["kept"]
