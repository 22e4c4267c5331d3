"""The evaluate job: instruction sets, the judge's verdicts and their order-swapped combination,
statistics, the blind rating page (in-process and in Chromium), and the whole job against a
real served SmolLM2 used as both systems and the judge, through the real `openai` client."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from alpaca_jobs.common.errors import SpecError, UserError
from alpaca_jobs.evaluate import judge, stats
from alpaca_jobs.evaluate.human import MAX_BODY, create_rating_app
from alpaca_jobs.evaluate.instructions import Item, load_items
from alpaca_jobs.evaluate.ratings import Ratings, left_right
from alpaca_jobs.evaluate.store import Appender, read_jsonl
from tests.conftest import ROOT

EVAL_SET = ROOT / "seeds" / "user_oriented_eval.jsonl"
NAMES = ("alpha", "beta")


# -- instruction sets ----------------------------------------------------------------------------
def _write(tmp: Path, lines: list[str]) -> Path:
    path = tmp / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shipped_set_loads_and_builds_prompts():
    items = load_items(EVAL_SET)
    assert len(items) >= 30 and len({it.id for it in items}) == len(items)
    with_input = next(it for it in items if it.input)
    assert with_input.prompt == f"{with_input.instruction}\n\n{with_input.input}"
    bare = next(it for it in items if not it.input)
    assert bare.prompt == bare.instruction
    assert len({it.app for it in items}) >= 20  # varied apps
    assert [it.id for it in load_items(EVAL_SET, 3)] == [it.id for it in items[:3]]


def test_self_instruct_user_oriented_record_loads_as_is(tmp_path):
    rec = {"id": "user_oriented_task_7", "motivation_app": "Gmail", "instruction": "Reply politely.",
           "instances": [{"input": "Can we meet?", "output": "Sure."}, {"input": "", "output": "Hi."}]}
    items = load_items(_write(tmp_path, [json.dumps(rec), ""]))
    assert [it.id for it in items] == ["user_oriented_task_7-1", "user_oriented_task_7-2"]
    assert items[0].reference == "Sure." and items[0].app == "Gmail"


GOOD = json.dumps({"id": "t1", "motivation_app": "x", "instruction": "Do it.",
                   "instances": [{"input": "", "output": ""}]})


@pytest.mark.parametrize("bad,needle", [
    ('{"id": "t2", "instruction": "x"', "not valid JSON"),
    ('["a list"]', "must be a JSON object"),
    ('{"id": "t2", "instances": [{"input": "", "output": ""}]}', "'instruction' must be a non-empty string"),
    ('{"id": "t2", "instruction": "x", "instances": []}', "'instances' must be a non-empty list"),
    ('{"id": "t2", "instruction": "x", "instances": [{"input": 3, "output": ""}]}', "instances[0].input"),
    (GOOD, "id 't1' already used on line 1"),
])
def test_malformed_line_names_file_line_and_fix(tmp_path, bad, needle):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(UserError) as exc:
        load_items(path)
    assert str(exc.value).startswith(f"{path}:2: ") and needle in str(exc.value)


# -- the judge -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,verdict", [
    ("Verdict: A", "A"), ("verdict: b", "B"), ("Verdict: tie", "tie"), ("**Verdict:** B", "B"),
    ("Answer B is more complete.\nVerdict: B", "B"), ('Verdict: "A"', "A"), ("Verdict: [[tie]]", "tie"),
    ("The verdict is Answer A.", "A"), ("[[B]]", "B"), ("B", "B"), (" a. ", "A"), ("Tie.", "tie"),
    ("Verdict: neither", "tie"), ("Verdict: A\nOn reflection... Verdict: B", "invalid"),
    ("Both answers are fine.", "invalid"), ("", "invalid"), ("I prefer A because", "invalid"),
    ("Verdict: C", "invalid"), ("Alpha", "invalid"),
])
def test_parse_verdict(reply, verdict):
    assert judge.parse_verdict(reply) == verdict


def test_prompt_placeholders_filled_once_and_custom_prompt_checked(tmp_path):
    text = judge.render(judge.DEFAULT_PROMPT, "say {output_b}", "A-text {instruction}", "B-text")
    assert "say {output_b}" in text and "A-text {instruction}" in text  # no re-expansion
    assert text.index("A-text") < text.index("B-text")
    (tmp_path / "p.txt").write_text("Compare {instruction} / {output_a}")
    with pytest.raises(UserError, match=r"lacks \{output_b\}"):
        judge.load_prompt(str(tmp_path / "p.txt"))
    (tmp_path / "p.txt").write_text("Ours: {instruction} {output_a} {output_b}")
    assert judge.load_prompt(str(tmp_path / "p.txt")).startswith("Ours:")


def _j(item: str, order: str, verdict: str) -> dict:
    first, second = NAMES if order == "ab" else NAMES[::-1]
    return {"item": item, "order": order, "verdict": verdict,
            "preferred": judge.preferred(verdict, first, second)}


def test_both_orders_combine_to_cancel_position_bias():
    js = [_j("1", "ab", "A"), _j("1", "ba", "B"),      # alpha both times -> a
          _j("2", "ab", "A"), _j("2", "ba", "A"),      # always the first shown: bias -> tie
          _j("3", "ab", "B"), _j("3", "ba", "A"),      # beta both times -> b
          _j("4", "ab", "tie"), _j("4", "ba", "B"),    # one tie -> tie
          _j("5", "ab", "A"), _j("5", "ba", "invalid"),  # unreadable -> invalid
          _j("6", "ab", "A")]                          # one order only: not combined yet
    assert judge.combine(js, *NAMES) == {"1": "a", "2": "tie", "3": "b", "4": "tie", "5": "invalid"}


# -- statistics ----------------------------------------------------------------------------------
def test_summary_known_case_and_bootstrap():
    v = {"1": "a", "2": "a", "3": "b", "4": "tie", "5": "invalid"}
    s = stats.summary(v, 2000, seed=1)
    assert (s["wins"], s["ties"], s["losses"], s["invalid"], s["judged"]) == (2, 1, 1, 1, 4)
    assert s["win_rate"] == 0.625  # (2 + 0.5) / 4
    assert s["ci95"][0] <= s["win_rate"] <= s["ci95"][1]
    assert s == stats.summary(v, 2000, seed=1)  # seeded: same numbers every time
    assert stats.summary({"1": "a"}, 500, 0)["ci95"] == [1.0, 1.0]
    assert stats.summary({"1": "invalid"}, 500, 0)["win_rate"] is None


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(3)
    small = rng.choice([0.0, 0.5, 1.0], size=20)
    large = np.tile(small, 25)
    lo, hi = stats.bootstrap_ci(small, 4000, seed=7)
    assert lo <= small.mean() <= hi and 0 <= lo < hi <= 1
    lo2, hi2 = stats.bootstrap_ci(large, 4000, seed=7)
    assert hi2 - lo2 < (hi - lo) / 3


def test_agreement_percent_and_kappa():
    x = {"1": "a", "2": "a", "3": "b", "4": "b", "5": "tie", "6": "a"}
    y = {"1": "a", "2": "b", "3": "b", "4": "b", "5": "tie", "7": "a"}
    g = stats.agreement(x, y)
    # shared 1-5: 4 of 5 agree; chance = (2*1 + 2*3 + 1*1) / 25 = 0.36; kappa = (0.8-0.36)/0.64
    assert g == {"items": 5, "percent": 80.0, "kappa": round(0.44 / 0.64, 4)}
    assert stats.agreement(x, x)["kappa"] == 1.0
    assert stats.agreement({"1": "a"}, {"1": "a"})["kappa"] is None  # chance agreement is 1
    assert stats.agreement(x, {"9": "a"})["items"] == 0


def test_majority_and_lengths():
    votes = {"r1": {"1": "a", "2": "a"}, "r2": {"1": "a", "2": "b"}, "r3": {"1": "b"}}
    assert stats.majority(votes) == {"1": "a", "2": "tie"}
    ln = stats.lengths(["one two three", "", "four"], [5, 0, 2])
    assert ln["mean_words"] == round(4 / 3, 2) and ln["empty"] == 1 and ln["max_words"] == 3


# -- files that survive a crash ------------------------------------------------------------------
def test_appender_recovers_a_cut_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"item": "1"}\n{"item": "2", "outp')  # the process died mid-write
    assert read_jsonl(path) == [{"item": "1"}]
    with Appender(path) as out:
        out.add({"item": "2"})
    assert read_jsonl(path) == [{"item": "1"}, {"item": "2"}]


def test_spec_rejects_equal_or_reserved_names(tmp_path):
    from alpaca_jobs.spec import load_spec

    base = ROOT / "jobs" / "evaluate-local.yaml"
    with pytest.raises(SpecError, match="different names"):
        load_spec(base, ["evaluate.system_b.name=candidate"])
    with pytest.raises(SpecError, match="reserved"):
        load_spec(base, ["evaluate.system_b.name=tie"])
    assert load_spec(ROOT / "jobs" / "evaluate.yaml").spec.evaluate.judge.model == "gpt-4o"


def test_served_models_take_turns_endpoints_join_the_first():
    from alpaca_jobs.evaluate.collect import phases
    from alpaca_jobs.evaluate.config import System

    remote = System(name="api", endpoint={"model": "gpt-4o-mini"})
    a = System(name="a", model_dir="/models/a")
    a2 = System(name="a2", model_dir="/models/a")
    b = System(name="b", model_dir="preset:smollm2-135m-instruct")
    assert [[s.name for s in g] for g in phases([a, remote, b, a2])] == [["api", "a", "a2"], ["b"]]
    assert [[s.name for s in g] for g in phases([remote])] == [["api"]]


# -- people: the blind rating page ---------------------------------------------------------------
def _fake_run(n: int = 3):
    items = [Item(f"it{i}", f"Instruction {i}", "some input" if i == 1 else "", f"ref {i}", "app")
             for i in range(n)]
    outputs = {(it.id, name): {"output": f"answer from {name} to {it.id}"} for it in items for name in NAMES}
    return items, outputs


@pytest.fixture()
def rating(tmp_path):
    items, outputs = _fake_run()
    store = Ratings(tmp_path / "ratings.sqlite3")
    yield TestClient(create_rating_app(items, outputs, NAMES, store, seed=5)), store, items
    store.close()


def test_rater_flow_resume_and_several_raters(rating):
    client, store, items = rating
    first = client.get("/api/next", params={"rater": "maria"}).json()
    assert first["item"]["id"] == "it0" and first["progress"] == {"rated": 0, "total": 3}
    again = client.get("/api/next", params={"rater": "maria"}).json()
    assert again == first  # same item, same order on reload
    left, right = left_right(5, "maria", "it0", NAMES)
    assert first["item"]["outputs"] == [f"answer from {left} to it0", f"answer from {right} to it0"]
    r = client.post("/api/ratings", json={"rater": "maria", "item": "it0", "choice": "A"})
    assert r.status_code == 200 and r.json()["progress"] == {"rated": 1, "total": 3}
    # A new client (a reload, another day) resumes at the next unrated item.
    assert client.get("/api/next", params={"rater": "maria"}).json()["item"]["id"] == "it1"
    client.post("/api/ratings", json={"rater": "maria", "item": "it1", "choice": "tie"})
    client.post("/api/ratings", json={"rater": "ken", "item": "it0", "choice": "B"})
    prefs = store.preferences()
    assert prefs["maria"] == {"it0": left, "it1": "tie"}
    assert prefs["ken"]["it0"] == left_right(5, "ken", "it0", NAMES)[1]
    assert client.get("/api/progress").json() == {"total": 3, "raters": {"ken": 1, "maria": 2}}
    client.post("/api/ratings", json={"rater": "maria", "item": "it2", "choice": "B"})
    done = client.get("/api/next", params={"rater": "maria"}).json()
    assert done["item"] is None and done["progress"]["rated"] == 3


def test_blind_no_system_names_anywhere(rating):
    client, _, _ = rating
    page = client.get("/")
    assert page.status_code == 200 and "Which answer is better" in page.text
    for body in (page.text, client.get("/api/next", params={"rater": "ann"}).text):
        assert all(f'"{n}"' not in body and f">{n}<" not in body for n in NAMES)
    item = client.get("/api/next", params={"rater": "ann"}).json()["item"]
    assert set(item) == {"id", "instruction", "input", "outputs"}  # no names, no references
    # Order is balanced across raters: both placements occur.
    sides = {left_right(5, f"r{i}", "it0", NAMES)[0] for i in range(20)}
    assert sides == set(NAMES)


@pytest.mark.parametrize("kwargs,status,needle", [
    (dict(json={"rater": "maria", "item": "nope", "choice": "A"}), 404, "no such item"),
    (dict(json={"rater": "maria", "item": "it0", "choice": "left"}), 400, "choice"),
    (dict(json={"rater": "<script>", "item": "it0", "choice": "A"}), 400, "rater"),
    (dict(json={"rater": "maria", "item": "it0", "choice": "A", "system": "alpha"}), 400, "unknown field"),
    (dict(json=["rater"]), 400, "JSON object"),
    (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "send JSON"),
    (dict(content=b"x" * (MAX_BODY + 1)), 413, "over"),
    (dict(content=iter([b"{" + b" " * MAX_BODY, b"}"])), 413, "over"),  # chunked, no length
])
def test_hostile_input_gets_a_clear_4xx(rating, kwargs, status, needle):
    client, store, _ = rating
    r = client.post("/api/ratings", **kwargs)
    assert r.status_code == status and needle in r.json()["error"]["message"]
    assert store.preferences() == {}


def test_bad_rater_name_and_unknown_route(rating):
    client, _, _ = rating
    r = client.get("/api/next", params={"rater": "x" * 41})
    assert r.status_code == 400 and "rater" in r.json()["error"]["message"]
    assert client.get("/api/nothing").json()["error"]["type"] == "not_found"


# -- the report from a run dir (no model needed) -------------------------------------------------
def test_report_files_and_human_ratings_fold_in(tmp_path):
    from alpaca_jobs.evaluate import report

    items, outputs = _fake_run(4)
    outputs[("it0", "alpha")]["output"] = "<b>bold</b> & more"
    js = [_j("it0", "ab", "A"), _j("it0", "ba", "B"), _j("it1", "ab", "A"), _j("it1", "ba", "A"),
          _j("it2", "ab", "B"), _j("it2", "ba", "A"), _j("it3", "ab", "oops")]
    humans = {"maria": {"it0": "alpha", "it1": "beta", "it2": "beta"}, "ken": {"it0": "alpha", "it2": "tie"}}
    rep = report.build(items, outputs, NAMES, js, humans, 500, 3, "judge-model")
    assert rep["llm_judge"]["wins"] == 1 and rep["llm_judge"]["ties"] == 1 and rep["llm_judge"]["losses"] == 1
    assert rep["llm_judge"]["position"]["first_preferred"] == round(4 / 6, 4)
    assert rep["humans"]["raters"]["maria"]["losses"] == 2 and rep["humans"]["ratings"] == 5
    pairs = {tuple(g["between"]): g for g in rep["agreement"]}
    assert pairs[("llm", "human:maria")]["items"] == 3 and pairs[("llm", "human:maria")]["percent"] == round(200 / 3, 2)
    assert ("human:ken", "human:maria") in pairs and ("llm", "human:ken") in pairs
    paths = report.write(rep, items, outputs, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.png", "report.html"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths[2].read_text()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in page and "<b>bold</b>" not in page
    assert "data:image/png;base64," in page
    assert json.loads(paths[0].read_text())["verdicts"]["llm"]["it1"] == "tie"
    assert "alpha 1 / tie 1 / beta 1" in report.format_text(rep)


# -- the whole job against a real server (integration) -------------------------------------------
SERVER_KEY = "evaluate-test-key-4d3c2b"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.test_serve import running_server

    tmp = tmp_path_factory.mktemp("eval-serve")
    with running_server(tmp, {"ALPACA_JOBS_API_KEYS": SERVER_KEY, "ALPACA_JOBS_WATERMARK_KEY": "wm"}) as base:
        yield base


def _served_requests(base: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("alpaca_serve_requests_total{") and "completions" in line)


def _spec(tmp: Path, base: str) -> Path:
    endpoint = {"base_url": base + "/v1", "model": "smollm2-135m-instruct", "api_key_env": "EVAL_TEST_KEY",
                "max_attempts": 2, "in_flight": 2}
    # A 135M model cannot follow our judge prompt, but it completes "...is Answer" with " A"
    # or " B": a judge through the completions API, with a prompt of our own (a prompt file).
    (tmp / "judge.txt").write_text("Which answer is better for the request?\n\nRequest: {instruction}"
                                   "\n\nAnswer A: {output_a}\n\nAnswer B: {output_b}\n\n"
                                   "The better answer is Answer")
    spec = {"job": "evaluate", "name": "eval-test", "runs_dir": str(tmp / "runs"),
            "layout": str(ROOT / "jobs" / "layouts" / "fsdp2-cpu.yaml"),
            "evaluate": {"instructions": str(EVAL_SET), "max_instructions": 3, "max_new_tokens": 24,
                         "bootstrap_samples": 200, "judge_prompt_file": str(tmp / "judge.txt"),
                         "system_a": {"name": "sampled", "endpoint": {**endpoint, "temperature": 1.0}},
                         "system_b": {"name": "greedy", "endpoint": {**endpoint, "temperature": 0}},
                         "judge": {**endpoint, "api": "completions", "temperature": 0, "max_tokens": 1}}}
    path = tmp / "evaluate.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.integration
def test_end_to_end_against_served_smollm2_then_rerun_is_free(server, tmp_path, monkeypatch):
    from alpaca_jobs.cli.evaluate import evaluate_command, report_command

    monkeypatch.setenv("EVAL_TEST_KEY", SERVER_KEY)
    spec, run_dir = _spec(tmp_path, server), tmp_path / "run"
    before = _served_requests(server)
    res = CliRunner().invoke(evaluate_command, [str(spec), "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "sampled vs greedy: 3 items" in res.output and "LLM judge" in res.output
    outputs = read_jsonl(run_dir / "outputs.jsonl")
    assert len(outputs) == 6 and {o["system"] for o in outputs} == {"sampled", "greedy"}
    assert all(o["output_tokens"] > 0 for o in outputs)
    judgments = read_jsonl(run_dir / "judgments.jsonl")
    assert sorted((j["item"], j["order"]) for j in judgments) == sorted(
        (f"alpaca_jobs_eval_{i}", o) for i in range(3) for o in ("ab", "ba"))
    assert all(j["verdict"] in ("A", "B", "tie", "invalid") for j in judgments)
    valid = [j for j in judgments if j["verdict"] in ("A", "B")]
    assert valid, judgments  # the model did answer with a position at least once
    for j in valid:  # a position verdict is mapped to the system shown there
        assert j["preferred"] == (j["first"] if j["verdict"] == "A" else j["second"])
        assert (j["first"], j["order"]) in (("sampled", "ab"), ("greedy", "ba"))
    rep = json.loads((run_dir / "report.json").read_text())
    llm = rep["llm_judge"]
    assert llm["wins"] + llm["ties"] + llm["losses"] + llm["invalid"] == 3 and llm["judged"] >= 1
    assert llm["ci95"][0] <= llm["win_rate"] <= llm["ci95"][1]
    assert (run_dir / "report.png").stat().st_size > 1000 and "sampled vs greedy" in (run_dir / "report.html").read_text()
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["job"] == "evaluate" and rec["status"] == "completed" and rec["backend"] == "in-process"
    assert rec["results"]["win_rate"] == llm["win_rate"] and rec["results"]["ci95"] == llm["ci95"]
    assert rec["results"]["wins"] == llm["wins"] and rec["results"]["judged_by"] == "llm"
    assert rec["api"]["requests"] == 12 == _served_requests(server) - before  # 6 outputs + 6 judgments
    assert rec["api"]["by_role"]["judge"]["requests"] == 6 and rec["api"]["cost_usd"] == 0
    assert rec["api"]["output_tokens"] == sum(o["output_tokens"] for o in outputs) + sum(
        j["output_tokens"] for j in judgments)
    # Again on the same run dir: nothing is asked twice; the report is rebuilt the same.
    mid = _served_requests(server)
    res = CliRunner().invoke(evaluate_command, [str(spec), "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert _served_requests(server) == mid
    rec2 = json.loads((run_dir / "run.json").read_text())
    assert rec2["api"]["this_attempt"]["requests"] == 0 and rec2["api"]["requests"] == 12
    assert rec2["results"] == rec["results"] and len(read_jsonl(run_dir / "outputs.jsonl")) == 6
    # People's ratings fold into the next report, without requests.
    store = Ratings(run_dir / "ratings.sqlite3")
    store.put("maria", "alpaca_jobs_eval_0", "sampled", "greedy", "A")
    store.close()
    res = CliRunner().invoke(report_command, [str(run_dir)])
    assert res.exit_code == 0 and "rater maria" in res.output
    assert json.loads((run_dir / "report.json").read_text())["humans"]["raters"]["maria"]["wins"] == 1


@pytest.mark.integration
def test_cancelled_job_resumes_without_asking_twice(server, tmp_path):
    """The worker as backends start it (``--payload``), cancelled (SIGTERM) mid-collection:
    the record says interrupted; the next attempt fetches only what is missing."""
    import os
    import signal
    import subprocess
    import sys

    from alpaca_jobs.runtime import run_payload
    from alpaca_jobs.spec import load_spec

    loaded = load_spec(_spec(tmp_path, server), ["evaluate.max_new_tokens=48", "evaluate.judge=null",
                                                 "evaluate.system_a.endpoint.in_flight=1",
                                                 "evaluate.system_b.endpoint.in_flight=1"])
    run_dir = tmp_path / "run"
    payload = {**loaded.payload(), "run_id": "cancel-test", "backend": "local", "run_dir": str(run_dir)}
    (tmp_path / "payload.json").write_text(json.dumps(payload))
    env = {**os.environ, "EVAL_TEST_KEY": SERVER_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_jobs.runtime", "--payload",
                             str(tmp_path / "payload.json")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.time() + 120
    while not read_jsonl(run_dir / "outputs.jsonl") and time.time() < end and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    rec = json.loads((run_dir / "run.json").read_text())
    assert proc.returncode != 0 and rec["status"] == "interrupted", out
    first = read_jsonl(run_dir / "outputs.jsonl")
    assert 1 <= len(first) < 6 and rec["api"]["requests"] == len(first)
    os.environ["EVAL_TEST_KEY"] = SERVER_KEY
    try:
        rec = run_payload(payload)
    finally:
        del os.environ["EVAL_TEST_KEY"]
    rows = read_jsonl(run_dir / "outputs.jsonl")
    assert len(rows) == 6 == len({(r["item"], r["system"]) for r in rows})  # nothing fetched twice
    assert rows[:len(first)] == first and rec.status == "completed"
    assert rec.api["this_attempt"]["requests"] == 6 - len(first) and rec.api["requests"] == 6
    assert rec.attempts == 2  # both attempts bill their compute time, as their API spend


@pytest.mark.integration
def test_model_dir_system_is_served_by_the_job(tmp_path):
    """A model_dir system: the job starts its own server (fresh keys), uses it, stops it."""
    import os

    from alpaca_jobs.api import Client
    from alpaca_jobs.evaluate.collect import DEFAULT_MODEL, serve_model

    with serve_model(DEFAULT_MODEL, 8, tmp_path) as ep:
        assert ep.model == "smollm2-135m-instruct" and ep.base_url.startswith("http://127.0.0.1:")
        assert os.environ[ep.api_key_env]
        reply = Client(ep).complete("Name a colour.", seed=1)
        assert reply.output_tokens > 0
        with pytest.raises(urllib.error.HTTPError) as exc:  # the server wants its key
            urllib.request.urlopen(ep.base_url + "/models", timeout=5)
        assert exc.value.code == 401
    assert ep.api_key_env not in os.environ
    with pytest.raises(OSError):
        urllib.request.urlopen(ep.base_url.removesuffix("/v1") + "/healthz", timeout=2)


# -- the rating page in a real browser (integration) ---------------------------------------------
@pytest.mark.integration
@pytest.mark.browser
def test_rate_one_item_in_chromium(tmp_path):
    import socket

    import uvicorn
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    items, outputs = _fake_run(2)
    store = Ratings(tmp_path / "ratings.sqlite3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_rating_app(items, outputs, NAMES, store, seed=5),
                                        host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#rater", "maria")
            page.click("#start")
            expect(page.locator("#instruction")).to_have_text("Instruction 0", timeout=30_000)
            expect(page.locator("#progress")).to_have_text("0 of 2 rated")
            left = page.text_content("#left")
            assert "answer from" in left and page.text_content("#right") != left
            page.click("#choose-A")
            expect(page.locator("#instruction")).to_have_text("Instruction 1", timeout=30_000)
            expect(page.locator("#progress")).to_have_text("1 of 2 rated")
            expect(page.locator("#input")).to_have_text("some input")
            browser.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    shown_left = left.removeprefix("answer from ").removesuffix(" to it0")
    assert store.preferences() == {"maria": {"it0": shown_left}}
    store.close()
