"""bench/collectives.py's claims, checked: on a 2x2 gloo world (two simulated nodes of two
processes) the counted collective bytes of a step follow the per-parameter formula, the GPU
layout's dtypes and reshard-after-forward show in it, and HSDP sends fewer bytes across nodes
than full shard. Counts, not seconds."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("collectives_bench", ROOT / "bench" / "collectives.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.integration
@pytest.mark.slow
def test_counted_bytes_follow_the_formula_and_hsdp_crosses_nodes_less():
    proc = subprocess.run([sys.executable, "bench/collectives.py", "--worlds", "2x2", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["max_error"] <= 0.03
    assert {(c["model"], c["sharding"]) for c in r["checks"]} == {
        (m, s) for m in "ABC" for s in ("full", "hybrid")}
    # Per parameter per step: two bf16 all-gathers (forward, and again for backward after the
    # reshard), one fp32 reduce-scatter; HSDP adds one fp32 all-reduce of the shard across nodes.
    assert set(r["k"]["hybrid"]) == {"all_gather/shard", "reduce_scatter/shard", "all_reduce/replicate"}
    assert set(r["k"]["full"]) == {"all_gather/all", "reduce_scatter/all"}
    for ks in r["k"].values():
        for k_layer, k_root in ks.values():
            assert k_layer == pytest.approx(4.0, abs=0.01) and k_root == pytest.approx(4.0, abs=0.01)
    by = {(c["model"], c["sharding"]): c for c in r["checks"]}
    for m in "ABC":
        full, hybrid = by[(m, "full")], by[(m, "hybrid")]
        assert hybrid["counted_across"] < 0.5 * full["counted_across"]
        assert hybrid["counted_nic"] < full["counted_nic"]
        assert hybrid["per_step"]["all_reduce"] == hybrid["per_step"]["reduce_scatter"]  # one per unit
    plans = {(p["model"], p["nodes"], p["sharding"]): p for p in r["plans"]}
    # 7B on 2 x 8: HSDP's all-reduce of a 1/8 fp32 shard over 2 nodes, 2 x 1/2 x 4/8 = 0.5 bytes
    # per parameter, vs full shard's 15/16 x (2 + 2 + 4) = 7.5 bytes over all 16 ranks.
    assert plans[("7B", 2, "hybrid")]["across"] / plans[("7B", 2, "full")]["across"] == pytest.approx(
        0.5 / 7.5, rel=1e-3)


def test_formula_by_hand_for_the_7b_plan():
    """The projection's arithmetic, without processes: k = 4 bytes per parameter everywhere."""
    b = _bench()
    k = {"full": {"all_gather/all": (4.0, 4.0), "reduce_scatter/all": (4.0, 4.0)},
         "hybrid": {"all_gather/shard": (4.0, 4.0), "reduce_scatter/shard": (4.0, 4.0),
                    "all_reduce/replicate": (4.0, 4.0)}}
    layer, root = b.params(b.PLANS["7B"])
    n = 32 * layer + root
    assert n == pytest.approx(6.74e9, rel=2e-3)
    full = b.predict(k["full"], b.PLANS["7B"], "full", 4, 8)
    assert full["across"] == pytest.approx(31 / 32 * 8 * n)  # every collective spans the 4 nodes
    assert full["nic"] == pytest.approx(full["across"] / 8)  # ring: 4 of 32 hops leave a node
    hybrid = b.predict(k["hybrid"], b.PLANS["7B"], "hybrid", 4, 8)
    assert hybrid["across"] == hybrid["nic"] == pytest.approx(2 * 3 / 4 * 4 * n / 8)
    assert hybrid["nvlink"] == pytest.approx(7 / 8 * 8 * n)
    assert b.dim_of([0, 1, 2, 3], 8, 4) == "shard" and b.dim_of([1, 5], 8, 4) == "replicate"
