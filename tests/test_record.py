"""Run records are read back as the record model, each field checked; a file that is not a record
is one clear line naming it and the field, wherever it is read (status, list, the ledger)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace

import pytest

from alpaca_jobs.backends.base import JobHandle
from alpaca_jobs.backends.states import RECORD
from alpaca_jobs.ops import ledger
from alpaca_jobs.ops.record import STATUSES, RecordError, RunRecord, load_record
from tests.conftest import cli, run_record


def test_a_record_reads_back_as_the_model_it_was_written_from(tmp_path):
    rec = run_record(run_id="r1", api={"cost_usd": 0.5, "requests": 3}, results={"kept": 7},
                     scheduler={"agree": True}, mfu=0.41)
    rec.write(tmp_path)
    back = load_record(tmp_path)
    assert isinstance(back, RunRecord) and back == rec
    assert back.gpus == 0 and back.total_cost_usd == rec.cost_usd + rec.api_cost_usd
    assert load_record(tmp_path / "nowhere") is None  # no record yet: None, not an error


def test_fields_a_newer_writer_added_are_ignored(tmp_path):
    data = {**run_record().to_dict(), "written_by": "alpaca-jobs 9", "power_watts": 700.0}
    assert RunRecord.from_dict(data) == run_record()


def test_an_older_writers_record_without_a_target_is_held_to_its_kinds(tmp_path):
    """A record written before records carried target_usd still reads, and a training run is
    held to the $100 its kind defaults to (dashboards and reports keep its budget line)."""
    for job, target in (("train", 100.0), ("generate", None), ("a-kind-this-install-lacks", None)):
        data = {**run_record(job=job).to_dict()}
        del data["target_usd"], data["target_met"]
        rec = RunRecord.from_dict(data)
        assert rec.target_usd == target and rec.target_met is None
    kept = RunRecord.from_dict({**run_record(job="train").to_dict(), "target_usd": 40.0})
    assert kept.target_usd == 40.0  # the record's own target wins


def _broken(rec: RunRecord, **change) -> str:
    data = rec.to_dict()
    for key, value in change.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize("text,needle", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a run record (a JSON object), got list"),
    (_broken(run_record(), cost_usd=KeyError), "cost_usd: required field is missing"),
    (_broken(run_record(), nodes="two"), "nodes: Input should be a valid integer"),
    (_broken(run_record(), status="exploded"), "status: 'exploded' is not one of running, completed"),
    (_broken(run_record(), run_id=""), "run_id: must not be empty"),
    (_broken(run_record(), results=[1]), "results: Input should be a valid dictionary"),
])
def test_a_file_that_is_not_a_record_names_itself_and_the_field(tmp_path, text, needle):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(RecordError) as err:
        load_record(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'run.json'}: ") and needle in str(err.value)


def test_non_utf8_record_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "run.json").write_bytes(b'{"run_id": "\xff\xfe"}')
    with pytest.raises(RecordError, match=r"run.json: not UTF-8 \(byte 0xff at offset 12\); move it away"):
        load_record(tmp_path)


def test_every_record_status_has_a_state():
    assert set(RECORD) == set(STATUSES)


def test_the_ledger_gives_records_and_skips_a_row_that_is_not_one(tmp_path, caplog):
    path = tmp_path / "ledger.sqlite3"
    good = run_record(run_id="good")
    ledger.record_run(good, path)
    ledger.record_run(replace(good, run_id="bad"), path)
    with ledger.connect(path) as conn:  # a row damaged by hand (or by another tool)
        conn.execute("UPDATE runs SET record = '{\"run_id\": \"bad\"}' WHERE run_id = 'bad'")
    with caplog.at_level(logging.WARNING), ledger.connect(path, create=False) as conn:
        found = ledger.records(conn)
    assert found == [good]
    assert "ledger row 'bad': " in caplog.text and "job: required field is missing" in caplog.text


def _finished_local_run(runs, run_id: str) -> None:
    """A local run whose process has ended (its pid: one that exited just now)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (runs / run_id).mkdir(parents=True)
    JobHandle(run_id, "local", str(dead.pid), str(runs / run_id), submitted_at="2026-12-06T00:00:00Z").save()


def test_status_and_list_say_which_record_is_broken(tmp_path):
    runs = tmp_path / "runs"
    _finished_local_run(runs, "fine")
    run_record(run_id="fine").write(runs / "fine")
    _finished_local_run(runs, "torn")
    (runs / "torn" / "run.json").write_text('{"run_id": "torn", "job": "tr')  # cut off mid-write
    torn = cli("status", "torn", "--runs-dir", str(runs))  # its state (as the backend has it), then why no report
    assert torn.returncode == 0 and "Traceback" not in torn.stderr, torn.stderr
    assert torn.stdout.startswith("torn: UNKNOWN (local job ")
    assert f"torn: no report: {runs / 'torn' / 'run.json'}: not JSON" in torn.stderr
    listed = cli("list", "--runs-dir", str(runs))
    assert listed.returncode == 0, listed.stderr
    lines = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:] if ln.strip()}
    assert "COMPLETED" in lines["fine"] and "UNKNOWN" in lines["torn"], listed.stdout
    assert f"torn: state unknown: {runs / 'torn' / 'run.json'}: not JSON" in listed.stderr, listed.stderr
    fine = cli("status", "fine", "--runs-dir", str(runs))
    assert fine.returncode == 0 and "fine: COMPLETED" in fine.stdout and "cost " in fine.stdout, fine.stderr
