"""tests/clusters/daemons.sh, which every test cluster script sources: a daemon is ours by its
pid file and command line, `stop` ends only that process, and a pid the kernel has given to
another program is not taken for ours. Real processes, real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "tests/clusters/daemons.sh"


def sh(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; LOG_TAG=test; source {LIB}; {script}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_start_alive_stop_track_the_daemon_by_its_pid_file(tmp_path: Path) -> None:
    mark = f"--mark={tmp_path}/ours"
    cmd = f"{sys.executable} -c 'import time; time.sleep(600)' {mark}"
    started = sh(f"start d.pid {mark} d.log {cmd}; start d.pid {mark} d.log {cmd}; cat d.pid", tmp_path)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split()[-1])
    try:
        assert running(pid)
        assert sh(f"alive d.pid {mark}", tmp_path).returncode == 0
        # A second `start` found it running and started nothing more.
        others = subprocess.run(["pgrep", "-f", "--", mark], capture_output=True, text=True).stdout.split()
        assert others == [str(pid)]
        # Another mark (a different daemon's) does not match it, nor does a prefix of a word.
        assert sh(f"alive d.pid --mark={tmp_path}/other", tmp_path).returncode != 0
        assert sh(f"alive d.pid {mark[:-1]}", tmp_path).returncode != 0
        stopped = sh(f"stop d.pid {mark}", tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        assert not (tmp_path / "d.pid").exists()
        assert not running(pid)
    finally:
        if running(pid):
            os.kill(pid, 9)


def test_a_pid_file_naming_someone_elses_process_is_not_ours(tmp_path: Path) -> None:
    """The pid file outlived its daemon and the pid now belongs to another program (here: a
    sleep this test started): `alive` says no and `stop` leaves that program running."""
    other = subprocess.Popen(["sleep", "600"])
    try:
        (tmp_path / "d.pid").write_text(f"{other.pid}\n")
        assert sh(f"alive d.pid --mark={tmp_path}/ours", tmp_path).returncode != 0
        assert sh(f"stop d.pid --mark={tmp_path}/ours", tmp_path).returncode == 0
        assert other.poll() is None, "stop killed a process that was not ours"
        assert not (tmp_path / "d.pid").exists()
        # An empty or missing pid file is simply not running.
        (tmp_path / "e.pid").write_text("")
        assert sh("alive e.pid sleep", tmp_path).returncode != 0
        assert sh("alive missing.pid sleep", tmp_path).returncode != 0
    finally:
        other.kill()
        other.wait()


def test_wait_for_gives_up_with_a_message(tmp_path: Path) -> None:
    out = sh("wait_for 1 'the moon' false", tmp_path)
    assert out.returncode != 0
    assert "[test] timed out waiting for the moon" in out.stderr
    assert sh("wait_for 1 'a file' test -d .", tmp_path).returncode == 0
