"""Day two, with real local runs (submitit, two FSDP processes): find runs (`list`, `status`
with no id), read and follow their logs by rank (in a real pseudo-terminal), and cancel with a
message that says what happened."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli

pytestmark = pytest.mark.integration


def _train(runs, run_id: str, *sets: str, wait: bool = True) -> subprocess.CompletedProcess:
    return cli("submit", "jobs/train-local.yaml", "--run-id", run_id, "--set", f"runs_dir={runs}",
               "--set", "train.max_steps=3", *[x for s in sets for x in ("--set", s)],
               *([] if wait else ["--no-wait"]), timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert _train(runs, "good").returncode == 0
    bad = _train(runs, "bad", "train.data=/nonexistent/data.json")
    assert bad.returncode != 0
    return runs


def test_list_and_status_find_runs_with_filters(runs):
    proc = cli("list", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[0]: ln.split() for ln in proc.stdout.splitlines()[1:] if ln.strip()}
    assert lines["good"][1:4] == ["train", "local", "COMPLETED"]
    only_done = cli("list", "--runs-dir", str(runs), "--state", "completed").stdout
    assert "good" in only_done and "bad" not in only_done.split()
    assert cli("status", "--runs-dir", str(runs)).stdout.splitlines()[0].split()[:4] == \
        ["RUN", "KIND", "CLUSTER", "STATE"]
    proc = cli("list", "--runs-dir", str(runs), "--since", "soon")
    assert proc.returncode != 0 and "--since 'soon'" in proc.stderr and "Traceback" not in proc.stderr


def test_logs_by_rank_all_ranks_and_a_rank_that_does_not_exist(runs):
    rank1 = cli("logs", "good", "--runs-dir", str(runs), "--rank", "1")
    assert rank1.returncode == 0 and "local_rank=1(2)" in rank1.stdout  # submitit's first line there
    assert "local_rank=0(2)" not in rank1.stdout
    both = cli("logs", "good", "--runs-dir", str(runs), "--rank", "all").stdout.splitlines()
    assert any(ln.startswith("[rank 1] ") and "local_rank=1(2)" in ln for ln in both)
    assert any(ln.startswith("[rank 0] ") and "step 3/3 loss" in ln for ln in both)
    missing = cli("logs", "good", "--runs-dir", str(runs), "--rank", "5")
    assert missing.returncode != 0 and "has 2 worker process(es): --rank 0-1" in missing.stderr


def test_cancel_says_a_finished_run_has_ended(runs):
    proc = cli("cancel", "good", "--runs-dir", str(runs))
    assert proc.returncode == 0 and "already ended (COMPLETED); nothing to cancel" in proc.stdout


def _pty_run(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdout/stderr; (exit code, what it showed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_jobs", *args], cwd=ROOT, stdin=follower,
                            stdout=follower, stderr=follower, env=os.environ.copy())
    os.close(follower)
    out, end = b"", time.time() + timeout
    while time.time() < end:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=60), out.decode(errors="replace")


def test_logs_follow_in_a_terminal_until_the_run_ends(runs):
    assert _train(runs, "followed", "train.max_steps=6", wait=False).returncode == 0
    rc, screen = _pty_run(["logs", "followed", "--runs-dir", str(runs), "-f"])
    assert rc == 0, screen
    lines = screen.splitlines()
    steps = [ln for ln in lines if "alpaca_jobs.train.progress: step " in ln]
    assert steps and steps[0].split("step ")[1].startswith("1/6") and steps[-1].split("step ")[1].startswith("6/6")
    assert all(ln.lstrip().startswith("20") for ln in steps)  # whole lines: nothing spliced in
    assert any("training completed at step 6/6" in ln for ln in lines)  # followed to the end
    again = cli("cancel", "followed", "--runs-dir", str(runs))
    assert "already ended (COMPLETED)" in again.stdout


def test_cost_before_launch_from_the_ledger_and_the_budget_refusal(runs):
    """A dry run prints the bound (time limit x hardware) and the expected cost from the
    throughput of the earlier run in the ledger; cost.max_usd refuses unless --over-budget."""
    sets = ["--set", f"runs_dir={runs}", "--set", "cost.cpu_core_hour_usd=100"]
    proc = cli("submit", "jobs/train-local.yaml", "--dry-run", *sets)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()  # stdout is exactly the submission
    assert "at most $66.67 (0.33 h time limit x 2 CPU core(s)" in lines[0]
    expected = float(lines[1].split("expected $")[1].split()[0])
    assert 0 < expected < 66.67 and lines[1].split("measured by run ")[1].split(",")[0] in ("good", "followed")
    refused = cli("submit", "jobs/train-local.yaml", "--dry-run", *sets, "--set", f"cost.max_usd={expected / 2:.2f}")
    assert refused.returncode != 0 and "cost.max_usd" in refused.stderr and "--over-budget" in refused.stderr
    assert cli("submit", "jobs/train-local.yaml", "--dry-run", *sets, "--set",
               f"cost.max_usd={expected / 2:.2f}", "--over-budget").returncode == 0
