"""bench/step_anatomy.py's claims, checked: the step plan cuts the 7B recipe's collectives per
optimizer step at least 3x, and a micro-step never syncs with the host. Counts, not seconds."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_fewer_collectives_and_no_host_sync_in_a_micro_step():
    proc = subprocess.run([sys.executable, "bench/step_anatomy.py", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    before, after = r["before"], r["after"]
    assert before["micro_steps_per_step"] == 4 and after["micro_steps_per_step"] == 1
    assert r["collective_ratio"] >= 3 and r["bytes_ratio"] >= 3
    assert after["host_syncs_per_micro_step"] == 0
    assert before["host_syncs_per_micro_step"] >= 1  # the probe does see the dense-mask path's sync
    assert after["by_op"].get("c10d._reduce_scatter_base_", 0) == 5 * 5  # once per unit per step
