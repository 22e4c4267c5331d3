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


PRICES = {"generate.api.input_usd_per_mtok": 1000, "generate.api.output_usd_per_mtok": 1000}


def test_budget_is_used_up_to_the_cap_with_several_requests_in_flight(tmp_path):
    # $1000 per 1M tokens either way: a request costs ~$0.9, at worst (its prompt at the
    # tokens per character seen + 10%, and 256 tokens out) ~$1. Four in flight reserve ~$4
    # between them; as replies come back their reservations shrink to the real cost and the
    # job goes on: it stops within one request's worst case of the cap, never over it.
    with Teacher() as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 1000, "generate.max_usd": 20.0, "generate.api.in_flight": 4,
            **PRICES}), "--run-id", "b")
        billed = t.billed_usd(1000, 1000)
    assert r.returncode == 0, r.stderr
    rec = _record(tmp_path, "b")
    assert rec["results"]["stop_reason"] == "budget (max_usd) reached"
    assert rec["api_cost_usd"] == rec["api"]["cost_usd"] == pytest.approx(billed, abs=1e-6)
    assert 0.9 * 20.0 <= rec["api_cost_usd"] <= 20.0
    assert rec["api"]["unsettled_usd"] == 0 and rec["results"]["kept"] < 1000


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


# -- faults: a request that fails for good, kills with requests in flight, the target -----

def _raw(tmp: Path, run_id: str) -> list[dict]:
    return [json.loads(x) for x in (tmp / "runs" / run_id / "raw.jsonl").read_text().splitlines()]


def test_the_budget_is_looked_at_again_when_replies_free_their_reservations(tmp_path):
    # Calibration, one at a time: the real costs of requests 0 and 1, and the worst case
    # reserved for request 2 once they are known (from the journal).
    with Teacher() as t:
        cal = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 1000, "generate.max_requests": 3, "generate.api.in_flight": 1,
            **PRICES}), "--run-id", "cal")
        assert cal.returncode == 0, cal.stderr
        a0, a1 = [(e["input_tokens"] + e["output_tokens"]) * 1000 / 1e6 for e in _raw(tmp_path, "cal")[:2]]
        journal = [json.loads(x) for x in (tmp_path / "runs" / "cal" / "spend.jsonl").read_text().splitlines()]
        r2 = next(x["usd"] for x in journal if x["op"] == "reserve" and x["index"] == 2)
        # With two in flight the worst cases reserved (estimated before any reply) leave no
        # room for request 2; once replies settle them at their real cost, there is.
        cap = a0 + a1 + r2 + 1e-4
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 1000, "generate.max_usd": cap, "generate.api.in_flight": 2,
            **PRICES}), "--run-id", "two")
    assert r.returncode == 0, r.stderr
    rec = _record(tmp_path, "two")
    assert rec["results"]["stop_reason"] == "budget (max_usd) reached"
    assert rec["api"]["requests"] == 3 and rec["api_cost_usd"] <= cap


def test_a_failing_request_keeps_the_others_replies_and_a_restart_does_not_pay_again(tmp_path):
    # Request 1 (seed 43) is answered 500 every time; 0, 2 and 3 are in flight beside it, and
    # two of their attempts are answered 429 first.
    with Teacher(delay=0.3, fail_seeds={43: 500}, faults=[(429, {})] * 2) as t:
        args = _sets(tmp_path, t.base_url, **{"generate.num_instructions": 40, "generate.api.in_flight": 4,
                                               "generate.api.max_attempts": 3, **PRICES})
        r = cli("generate", str(SPEC), *args, "--run-id", "f")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "gave up after 3 attempts (HTTP 500)" in r.stderr
        rec = _record(tmp_path, "f")
        answered = {s - 42 for s in t.seeds_seen}  # every request the server answered 200 (billed)
        assert rec["status"] == "failed" and 1 not in answered and len(answered) >= 3
        assert {e["index"] for e in _raw(tmp_path, "f")} == answered  # no paid reply thrown away
        api = rec["api"]
        assert (api["input_tokens"], api["output_tokens"]) == (t.billed_input_tokens, t.billed_output_tokens)
        assert api["attempts"] == t.requests and api["failed_attempts"] == t.errors == 5  # 3 x 500, 2 x 429
        assert api["failed_requests"] == rec["results"]["failed_requests"] == 1
        # The server mends; the same run goes on and asks none of the answered requests again.
        t.fail_seeds.clear()
        seen = len(t.seeds_seen)
        again = cli("generate", str(SPEC), *args, "--run-id", "f")
        assert again.returncode == 0, again.stderr
        asked_after = {s - 42 for s in t.seeds_seen[seen:]}
    assert not asked_after & answered and 1 in asked_after
    rec = _record(tmp_path, "f")
    assert rec["results"]["kept"] == 40 and rec["api"]["requests"] == len(t.seeds_seen)
    assert rec["api"]["attempts"] == t.requests and rec["api"]["failed_requests"] == 1


def test_a_run_whose_target_is_met_completes_though_a_request_failed(tmp_path):
    # A server that ignores `stop` writes 9 tasks a reply (4..12) where 6 were asked for: the
    # job sends 3 requests for 13 tasks; 0 and 2 bring 18, request 1 fails for good.
    with Teacher(n_tasks=12, ignore_stop=True, fail_seeds={43: 500}) as t:
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 13, "generate.api.in_flight": 4, "generate.api.max_tokens": 1024,
            "generate.api.max_attempts": 2}), "--run-id", "t")
    assert r.returncode == 0, r.stderr
    rec = _record(tmp_path, "t")
    res = rec["results"]
    assert rec["status"] == "completed" and res["stop_reason"] == "target reached"
    assert res["kept"] == 13 == len(json.loads((tmp_path / "runs" / "t" / "alpaca_data.json").read_text()))
    assert res["failed_requests"] == 1 and "gave up after 2 attempts" in res["error"]
    assert res["rejected"]["beyond_target"] >= 1  # the surplus is counted, not kept
    assert rec["api"]["failed_attempts"] == 2 and rec["api"]["requests"] == 2


def test_a_request_for_n_tasks_asks_for_n_and_gets_n_and_no_more_than_the_target_is_kept(tmp_path):
    seeds = load_seeds(SEEDS)
    prompt = build_prompt(seeds[:3], 6)
    assert "invent 6 new and varied tasks" in prompt.replace("\n", " ")
    with Teacher() as t:  # writes on until a stop sequence or max_tokens cuts it
        r = cli("generate", str(SPEC), *_sets(tmp_path, t.base_url, **{
            "generate.num_instructions": 6, "generate.api.in_flight": 4,
            "generate.api.max_tokens": 1024}), "--run-id", "n")
    assert r.returncode == 0, r.stderr
    raw = _raw(tmp_path, "n")
    first = raw[0]
    assert first["finish_reason"] == "stop" and "9. Instruction:" in first["text"]
    assert "10. Instruction" not in first["text"]  # the examples are 1-3, the new tasks 4-9
    res = _record(tmp_path, "n")["results"]
    assert res["candidates"] >= 6 and res["kept"] == 6 and len(raw) == t.requests
    assert len(raw) <= 2  # 6 wanted, 6 per request: one request, a second only if one was rejected


def test_killed_with_requests_in_flight_the_job_never_forgets_what_may_have_been_billed(tmp_path):
    with Teacher(delay=1.0) as t:
        args = [sys.executable, "-m", "alpaca_jobs", "generate", str(SPEC),
                *_sets(tmp_path, t.base_url, **{"generate.num_instructions": 1000, "generate.max_usd": 20.0,
                                                 "generate.api.in_flight": 4, **PRICES}), "--run-id", "sk"]
        raw = tmp_path / "runs" / "sk" / "raw.jsonl"
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.time() + 120
        # Kill once the server has billed replies that are not in raw.jsonl yet.
        while time.time() < end:
            logged = len(raw.read_text().splitlines()) if raw.is_file() else 0
            if logged >= 2 and len(t.seeds_seen) > logged:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        billed_at_kill = t.billed_usd(1000, 1000)
        logged = _raw(tmp_path, "sk")
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        billed = t.billed_usd(1000, 1000)
    logged_cost = sum(e["input_tokens"] + e["output_tokens"] for e in logged) * 1000 / 1e6
    assert billed_at_kill > logged_cost  # replies were billed and lost with the process
    rec = _record(tmp_path, "sk")
    assert rec["api"]["unsettled_usd"] > 0 and rec["results"]["stop_reason"] == "budget (max_usd) reached"
    known = rec["api_cost_usd"]
    assert known == pytest.approx(rec["api"]["cost_usd"] + rec["api"]["unsettled_usd"])
    assert billed - 1e-6 <= known <= 20.0  # never less than the bill, never over the cap
    assert known >= 0.9 * 20.0


# -- seeds: novelty against another seed set -------------------------------------------------

def _seed_line(instruction: str, output: str = "An answer.") -> str:
    return json.dumps({"id": "t", "name": "t", "instruction": instruction,
                       "instances": [{"input": "", "output": output}], "is_classification": False}) + "\n"


def test_seeds_check_names_the_worst_pairs_and_fails_at_the_threshold(tmp_path):
    # An upstream-like file (self-instruct's layout), written here: the project ships none.
    upstream = tmp_path / "upstream.jsonl"
    upstream.write_text(_seed_line("Translate the English sentence into Chinese.")
                        + _seed_line("Give me a cooking recipe for the following food."))
    ours = tmp_path / "ours.jsonl"
    ours.write_text(_seed_line("Name three primary colours.")
                    + _seed_line("Translate the sentence into Portuguese."))
    r = cli("seeds", "check", str(ours), "--against", str(upstream))
    assert r.returncode == 1, r.stderr
    first = r.stdout.splitlines()[:3]  # worst pair first, both sides named by file:line
    assert first == ["0.727 TOO SIMILAR", f"  {ours}:2: Translate the sentence into Portuguese.",
                     f"  {upstream}:1: Translate the English sentence into Chinese."]
    assert "2 seed tasks; max ROUGE-L 0.727; 1 at or above 0.7" in r.stdout
    ok = cli("seeds", "check", str(ours), "--against", str(upstream), "--threshold", "0.75")
    assert ok.returncode == 0 and "0 at or above 0.75" in ok.stdout
    # The project's own seeds against themselves: every task is its own worst pair (1.0).
    assert cli("seeds", "check", str(SEEDS), "--against", str(SEEDS)).returncode == 1
    # A malformed file: one line naming it, no traceback.
    upstream.write_text("{not json\n")
    bad = cli("seeds", "check", str(ours), "--against", str(upstream))
    assert bad.returncode == 2 and f"{upstream}:1: not valid JSON" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_rewritten_seed_is_novel_against_the_instruction_it_resembled():
    from alpaca_jobs.generate.rouge import rouge_l, tokenize

    seeds = {s.instruction for s in load_seeds(SEEDS)}
    assert "Translate the sentence into Portuguese." not in seeds
    assert "Render this English sentence in Portuguese." in seeds
    assert rouge_l(tokenize("Render this English sentence in Portuguese."),
                   tokenize("Translate the English sentence into Chinese.")) < 0.7
