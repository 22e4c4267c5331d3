"""Training is visible while it runs: the progress bar and plain progress lines, the follower's
bar on the submitting terminal (read off a real tmux screen), the run's live metrics (status
running before the end), and the loss curve and summary page left in the run directory."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alpaca_jobs.cli.follow import Follower
from alpaca_jobs.common.progress import PROGRESS_FILE, read_snapshot
from alpaca_jobs.train.progress import Progress
from tests.conftest import ROOT, cli

SPEC = str(ROOT / "jobs" / "train-local.yaml")
BAR = re.compile(r"train 100%\|.*\| (\d+)/(\d+), loss (\d+\.\d{4}) \| [\d,]+ tok/s \| ETA (\d\d:\d\d) \| "
                 r"cost \$\d+\.\d{4}")


def _read_pty(fd: int) -> str:
    """Everything written to the pty so far (the master side), without blocking."""
    import select

    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def _openpty(cols: int = 150) -> tuple[int, int]:
    """A pseudo-terminal sized like a real one (a fresh pty has 0 columns)."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    return master, slave


def _steps(p: Progress, n: int) -> None:
    p.start(0, n)
    for i in range(1, n + 1):
        p.step(i, loss=3.0 - 0.1 * i, seconds=0.5, tokens=1000)
    p.close()


def test_plain_lines_off_a_terminal(tmp_path, caplog):
    """Batch logs: one line per interval (and the first and last step), no carriage returns."""
    import logging

    stream = io.StringIO()  # not a terminal
    p = Progress(tmp_path, every_seconds=3600, stream=stream, cost=lambda: 0.125)
    with caplog.at_level(logging.INFO, logger="alpaca_jobs.train.progress"):
        p.phase("loading the model")
        _steps(p, 6)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["loading the model",
                     "step 1/6 loss 2.9000 | 2,000 tok/s | ETA 00:02 | cost $0.1250",
                     "step 6/6 loss 2.4000 | 2,000 tok/s | ETA 00:00 | cost $0.1250"]
    assert stream.getvalue() == ""  # no bar drawn
    snap = read_snapshot(tmp_path)
    assert (snap.phase, snap.step, snap.total, snap.loss, snap.cost_usd) == ("done", 6, 6, pytest.approx(2.4), 0.125)


def test_bar_on_a_terminal(tmp_path):
    """On a real pseudo-terminal rank 0 draws a tqdm bar: step n/N, loss, tokens/s, ETA, cost."""
    master, slave = _openpty()
    with open(slave, "w", closefd=True) as term:
        p = Progress(tmp_path, stream=term, cost=lambda: 0.5)
        assert p.tty
        _steps(p, 4)
        term.flush()
        out = _read_pty(master)
    os.close(master)
    assert "\r" in out  # redrawn in place
    assert re.search(r"train 100%\|[^|]*\| 4/4, loss 2\.6000 \| 2,000 tok/s \| ETA 00:00 \| cost \$0\.5000", out), out
    assert re.search(r"\| 2/4, loss 2\.8000 .* ETA 00:01", out), out  # midway: an ETA ahead


def test_follower_passes_text_through_off_a_terminal(tmp_path):
    out = io.StringIO()
    f = Follower(tmp_path, stream=out)
    f.feed("line one\n2026 [rank0] INFO alpaca_jobs.train.progress: step 1/3 loss 1 \npartial")
    f.close()
    assert out.getvalue() == "line one\n2026 [rank0] INFO alpaca_jobs.train.progress: step 1/3 loss 1 \npartial"


def test_follower_draws_the_bar_from_progress_json_on_a_terminal(tmp_path):
    p = Progress(tmp_path, stream=io.StringIO(), cost=lambda: 0.0)
    p.start(0, 10)
    p.step(3, loss=1.5, seconds=1.0, tokens=100)
    p._write(force=True)
    master, slave = _openpty()
    with open(slave, "w", closefd=True) as term:
        f = Follower(tmp_path, stream=term)
        f.feed("hello\nx INFO alpaca_jobs.train.progress: step 3/10 loss 1.5000 | ...\n")
        f.close()
        term.flush()
        out = _read_pty(master)
    os.close(master)
    assert "hello" in out and "alpaca_jobs.train.progress: step" not in out  # the bar replaces it
    assert re.search(r"\| 3/10, loss 1\.5000 \| 100 tok/s \| ETA 00:07", out), out


def _prom(path: Path) -> dict:
    return {(s.name, s.labels.get("status")): s.value
            for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}


def test_runtime_writes_running_metrics_before_the_end(tmp_path, monkeypatch):
    """run_job publishes the record as it stands (status running) from a thread while the body
    runs, then the final record: read through the node_exporter textfile sink."""
    from alpaca_jobs.job import Outcome, Payload
    from alpaca_jobs.ops import metrics
    from alpaca_jobs.runtime import run_job
    from alpaca_jobs.spec import load_spec

    textfiles = tmp_path / "textfile"
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(textfiles))
    monkeypatch.setenv("ALPACA_JOBS_METRICS_INTERVAL", "0.2")
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.setenv("ALPACA_JOBS_LEDGER", str(tmp_path / "ledger.sqlite3"))
    loaded = load_spec(ROOT / "jobs/serve-local.yaml")
    payload = Payload.build(loaded, "live-1", "local", tmp_path / "runs" / "live-1")
    prom = metrics.textfile_path(textfiles, "live-1")
    seen = []

    def body(job):  # a kind's body: it looks at the sink while it is still running
        end = time.time() + 30
        while time.time() < end and not (prom.exists() and _prom(prom).get(("alpaca_job_status", "running"))):
            time.sleep(0.05)
        seen.append(_prom(prom))
        return Outcome("completed", {})

    rec = run_job(payload, body)
    assert seen[0][("alpaca_job_status", "running")] == 1.0
    assert seen[0][("alpaca_job_status", "completed")] == 0.0
    assert ("alpaca_job_finished_timestamp_seconds", None) not in seen[0]
    final = _prom(prom)
    assert rec.status == "completed"
    assert final[("alpaca_job_status", "completed")] == 1.0 and final[("alpaca_job_status", "running")] == 0.0
    assert final[("alpaca_job_finished_timestamp_seconds", None)] > 0


def test_no_live_thread_without_a_sink(tmp_path, monkeypatch):
    from alpaca_jobs.job import Payload
    from alpaca_jobs.ops import metrics
    from alpaca_jobs.runtime import LivePusher, new_job
    from alpaca_jobs.spec import load_spec

    monkeypatch.delenv(metrics.TEXTFILE_DIR_ENV, raising=False)
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    job = new_job(Payload.build(load_spec(ROOT / "jobs/serve-local.yaml"), "x", "local", tmp_path / "x"))
    pusher = LivePusher.start(job)
    assert not pusher.thread.is_alive()
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(tmp_path / "tf"))
    monkeypatch.setenv("ALPACA_JOBS_METRICS_INTERVAL", "0")  # 0 turns the live pushes off
    assert not LivePusher.start(job).thread.is_alive()


# --- the real CLI on a real terminal -----------------------------------------------------


def _tmux(*args: str, socket: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """`alpaca-jobs submit jobs/train-local.yaml --set train.max_steps=8` in a 160x50 tmux pane:
    (the screen at the end, the run dir)."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    tmp = tmp_path_factory.mktemp("tty")
    runs, done = tmp / "runs", tmp / "done"
    socket = f"alpaca-test-{uuid.uuid4().hex[:8]}"
    env = {"PYTHONPATH": str(ROOT), "ALPACA_JOBS_CACHE": os.environ["ALPACA_JOBS_CACHE"],
           "HF_HUB_OFFLINE": "1", "ALPACA_JOBS_TEXTFILE_DIR": str(tmp / "textfile"), "TERM": "xterm-256color",
           "ALPACA_JOBS_LEDGER": str(tmp / "ledger.sqlite3")}
    command = (" ".join(f"{k}={v}" for k, v in env.items()) + f" {sys.executable} -m alpaca_jobs submit {SPEC}"
               f" --set runs_dir={runs} --set train.max_steps=8 --run-id tty; echo $? > {done}; sleep 600")
    started = _tmux("new-session", "-d", "-s", "run", "-x", "160", "-y", "50", command, socket=socket)
    assert started.returncode == 0, started.stderr
    try:
        end = time.time() + 600
        while time.time() < end and not done.exists():
            time.sleep(1)
        screen = _tmux("capture-pane", "-p", "-t", "run", "-S", "-200", socket=socket).stdout
    finally:
        _tmux("kill-server", socket=socket)
    assert done.exists() and done.read_text().strip() == "0", screen
    return screen, runs / "tty", tmp


@pytest.mark.integration
def test_submit_on_a_terminal_shows_the_bar(terminal_run):
    screen, run_dir, _ = terminal_run
    bars = [m for m in map(BAR.search, screen.splitlines()) if m]
    assert bars, screen
    n, total, loss, eta = bars[-1].groups()
    assert (n, total, eta) == ("8", "8", "00:00")
    rec = json.loads((run_dir / "run.json").read_text())
    assert float(loss) == pytest.approx(rec["final_loss"], abs=1e-4)
    assert "alpaca_jobs.train.progress: step" not in screen  # the bar stands for those lines
    for said in ("preparing the base model preset:tiny-llama", "loading the tokenizer and the model",
                 "training from step 0 of 8", "training completed at step 8/8"):
        assert said in screen, said
    assert "\nsteps       8/8" in screen  # then the run report


@pytest.mark.integration
def test_the_log_file_has_plain_progress_lines(terminal_run):
    _, run_dir, _ = terminal_run
    log = cli("logs", "tty", "--runs-dir", str(run_dir.parent)).stdout
    assert "\r" not in log and "\x1b" not in log
    lines = re.findall(r"alpaca_jobs\.train\.progress: step (\d+)/8 loss \d+\.\d{4} \| [\d,]+ tok/s \| "
                       r"ETA \d\d:\d\d \| cost \$\d+\.\d{4}", log)
    assert lines[0] == "1" and lines[-1] == "8", log
    assert json.loads((run_dir / PROGRESS_FILE).read_text())["step"] == 8


@pytest.mark.integration
def test_training_run_leaves_a_loss_curve_and_a_summary(terminal_run):
    import base64

    import numpy as np
    from PIL import Image

    _, run_dir, tmp = terminal_run
    img = np.asarray(Image.open(run_dir / "loss.png").convert("RGB")).astype(int)
    assert img.shape[:2] == (400, 800)
    blue = np.all(np.abs(img - [31, 119, 180]) < 40, axis=2)  # tab:blue: the curve
    ys, xs = np.nonzero(blue)
    assert blue.sum() > 500
    assert xs.max() - xs.min() > 0.6 * img.shape[1]  # the curve runs across the plot area
    assert ys.max() - ys.min() > 0.3 * img.shape[0]  # and the loss falls over the run
    assert xs.min() > 50 and xs.max() < img.shape[1] - 5  # inside the axes, not a stray mark
    page = (run_dir / "summary.html").read_text()
    rec = json.loads((run_dir / "run.json").read_text())
    assert f"<td>{rec['steps']}/{rec['total_steps']}</td>" in page and "<td>CPU-hours</td>" in page
    inline = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(inline) == (run_dir / "loss.png").read_bytes()
    prom = _prom(tmp / "textfile" / "alpaca_tty.prom")
    assert prom[("alpaca_job_status", "completed")] == 1.0


@pytest.mark.integration
def test_the_pipeline_draws_a_stage_bar_on_a_terminal(tmp_path, monkeypatch):
    """A pipeline waiting on a training stage (real local run) shows the stage's states and,
    on a terminal, its progress bar under them; off a terminal only the state lines."""
    import threading

    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.pipeline.run import _follow
    from alpaca_jobs.pipeline.state import Pipeline, StageRun
    from alpaca_jobs.spec import load_spec

    monkeypatch.setenv("ALPACA_JOBS_LEDGER", str(tmp_path / "ledger.sqlite3"))
    backend = get_backend("local")
    loaded = load_spec(SPEC, [f"runs_dir={tmp_path / 'runs'}", "train.max_steps=8"])
    sub = backend.render(loaded, "p-train")
    handle = backend.submit(sub)
    pipe = Pipeline("p", SPEC, "local", tmp_path / "pipe",
                    {"train": StageRun("train", "p-train", str(sub.run_dir), "local")})
    master, slave = _openpty()
    chunks: list[str] = []
    done = threading.Event()

    def drain() -> None:  # the terminal's reader: a full pty would block the writer
        while not done.is_set():
            chunks.append(_read_pty(master))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    said: list[str] = []
    with open(slave, "w", closefd=True) as term, monkeypatch.context() as m:
        m.setattr(sys, "stdout", term)
        ok = _follow(backend, handle, "train", pipe, said.append, Follower, poll=0.2)
        term.flush()
    done.set()
    reader.join(timeout=5)
    chunks.append(_read_pty(master))
    os.close(master)
    out = "".join(chunks)
    assert ok and pipe.stages["train"].status == "COMPLETED"
    assert said == []  # on a terminal the lines go above the bar, not through echo
    assert "[train] COMPLETED" in out, out
    bars = [m for m in map(BAR.search, out.replace("\r", "\n").splitlines()) if m]
    assert bars and bars[-1].group(1) == bars[-1].group(2) == "8", out

    said.clear()  # off a terminal: the states through echo, no bar
    again = _follow(backend, handle, "train", pipe, said.append, Follower, poll=0.2)
    assert again and said == ["[train] COMPLETED"]
