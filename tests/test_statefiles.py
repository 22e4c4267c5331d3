"""A runs dir holding a damaged file (handle.json, run.json, pipeline.json: cut short, edited by
hand, not UTF-8) never breaks the day-two commands: `list` shows the run as UNKNOWN with why,
`status`, `logs` and `cancel` name the file and the field, and nothing prints a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alpaca_jobs.backends.base import HandleError, JobHandle
from alpaca_jobs.pipeline.state import Pipeline, PipelineFileError, StageRun
from tests.conftest import cli, run_record


def _dead_pid() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return str(proc.pid)


DAMAGED_HANDLES = [
    (b'{"run_id": "x", "backend": "lo', "not JSON"),
    (b'\xff\xfe{}', "not UTF-8 (byte 0xff at offset 0)"),
    (b'["x"]', "not a job handle (a JSON object), got list"),
    (b'{"run_id": "x"}', "backend: required field is missing"),
    (b'{"run_id": "x", "backend": "local", "job_id": 7, "run_dir": "d"}', "job_id: Input should be a valid string"),
    (b'{"run_id": "x", "backend": "", "job_id": "7", "run_dir": "d"}', "backend: must not be empty"),
]


@pytest.mark.parametrize("raw,needle", DAMAGED_HANDLES)
def test_a_damaged_handle_is_named_with_its_field(tmp_path, raw, needle):
    (tmp_path / "handle.json").write_bytes(raw)
    with pytest.raises(HandleError) as err:
        JobHandle.load(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'handle.json'}: ") and needle in str(err.value)
    assert "move" in str(err.value)  # and what to do about it


def test_a_handle_round_trips_and_ignores_fields_a_newer_writer_added(tmp_path):
    handle = JobHandle("r", "local", "12", str(tmp_path), ["o.log"], "2026-12-07T00:00:00Z", ranks=2, nodes=1)
    handle.save()
    assert JobHandle.load(tmp_path) == handle
    data = json.loads((tmp_path / "handle.json").read_text())
    (tmp_path / "handle.json").write_text(json.dumps({**data, "added_later": {"x": 1}}))
    assert JobHandle.load(tmp_path) == handle


def test_a_pipeline_round_trips_and_a_damaged_one_names_the_stage_field(tmp_path):
    pipe = Pipeline("p", "jobs/pipeline-local.yaml", "local", tmp_path,
                    {"train": StageRun("train", "p-train", str(tmp_path / "t"), "local", "9", "COMPLETED")},
                    {"pipeline.id": "p"}, {"watermark": {"z": 4.2}})
    pipe.save()
    assert Pipeline.load(tmp_path) == pipe
    body = json.loads((tmp_path / "pipeline.json").read_text())
    del body["stages"]["train"]["run_dir"]
    (tmp_path / "pipeline.json").write_text(json.dumps(body))
    with pytest.raises(PipelineFileError, match=r"pipeline.json: stages\.train\.run_dir: required field is missing"):
        Pipeline.load(tmp_path)


def _runs(tmp_path):
    """A runs dir with one good finished run and one of each kind of damage."""
    runs = tmp_path / "runs"
    for name in ("good", "torn-handle", "latin1-handle", "no-backend", "bad-pid", "torn-record"):
        (runs / name).mkdir(parents=True)
    JobHandle("good", "local", _dead_pid(), str(runs / "good"), submitted_at="2026-12-07T00:00:00Z").save()
    run_record(run_id="good").write(runs / "good")
    (runs / "torn-handle" / "handle.json").write_text('{"run_id": "torn-handle", "backend": "lo')
    (runs / "latin1-handle" / "handle.json").write_bytes('{"run_id": "caf\u00e9"}'.encode("latin-1"))
    (runs / "no-backend" / "handle.json").write_text('{"run_id": "no-backend"}')
    JobHandle("bad-pid", "local", "not-a-pid", str(runs / "bad-pid"), submitted_at="2026-12-07T00:00:00Z").save()
    JobHandle("torn-record", "local", _dead_pid(), str(runs / "torn-record"),
              submitted_at="2026-12-07T00:00:00Z").save()
    (runs / "torn-record" / "run.json").write_text('{"run_id": "torn-record", "job": "tr')
    (runs / "pipe").mkdir()
    (runs / "pipe" / "pipeline.json").write_text('{"id": "pipe", "stages": ')
    return runs


def test_list_shows_every_damaged_run_as_unknown_with_why(tmp_path):
    runs = _runs(tmp_path)
    listed = cli("list", "--runs-dir", str(runs))
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    rows = {ln.split()[0]: ln for ln in listed.stdout.splitlines()[1:] if ln.strip()}
    assert "COMPLETED" in rows["good"]
    for name in ("torn-handle", "latin1-handle", "no-backend", "bad-pid", "torn-record"):
        assert "UNKNOWN" in rows[name], listed.stdout
        assert f"{name}: state unknown: " in listed.stderr, listed.stderr
    assert f"{runs / 'latin1-handle' / 'handle.json'}: not UTF-8" in listed.stderr
    assert "not-a-pid' is not a process id" in listed.stderr


@pytest.mark.parametrize("command,run,rc,needle", [
    ("status", "torn-handle", 2, "torn-handle/handle.json: not JSON"),
    ("logs", "latin1-handle", 2, "latin1-handle/handle.json: not UTF-8"),
    ("cancel", "no-backend", 2, "no-backend/handle.json: backend: required field is missing"),
    ("cancel", "bad-pid", 2, "job_id: 'not-a-pid' is not a process id"),
    ("status", "pipe", 2, "pipe/pipeline.json: not JSON"),
    # the job's state is still told; the report's absence is explained
    ("status", "torn-record", 0, "torn-record: no report: "),
    ("cancel", "torn-record", 0, ""),
])
def test_day_two_commands_name_the_damaged_file(tmp_path, command, run, rc, needle):
    runs = _runs(tmp_path)
    out = cli(command, run, "--runs-dir", str(runs))
    assert out.returncode == rc and "Traceback" not in out.stderr + out.stdout, out.stderr
    assert needle in out.stderr, out.stderr
    if run == "torn-record":
        assert out.stdout.startswith(run) and "UNKNOWN" in out.stdout, out.stdout
