"""Ops: the GPU-hours ledger, `alpaca-jobs report`, the jobs' Prometheus metrics, and the
checked-in Grafana dashboard and alert rules, queried through a real Prometheus 2.42 fed by a
real Pushgateway 1.5 (tests/clusters/prometheus.sh, started by this module's integration tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from alpaca_jobs.cli.costs import report_command
from alpaca_jobs.common import kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops import ledger, metrics, report, sinks
from alpaca_jobs.ops.record import RunRecord
from tests.conftest import ROOT

DASHBOARD = ROOT / "dashboards/grafana/alpaca-jobs.json"
ALERTS = ROOT / "dashboards/prometheus/alerts.yml"
GPU_HOURS_BY_STAGE = "GPU-hours by stage"


def make_record(run_id: str, job: str, backend: str, *, gpus: int = 0, hours: float = 0.0,
                price: float = 0.0, api: float = 0.0, target: float | None = None,
                status: str = "completed", gpu_type: str | None = None,
                started: str = "2026-11-01T00:00:00Z") -> RunRecord:
    """A run record as records.build_record writes it (the target: the kind's default unless
    ``target`` is given, as build_record does)."""
    gpu_seconds = hours * 3600 * gpus
    cost = gpu_seconds / 3600 * price
    if target is None:
        target = kinds.get(job).default_target_usd
    return RunRecord(
        run_id=run_id, job=job, backend=backend, status=status, nodes=1,
        gpus_per_node=gpus, gpu_type=gpu_type if gpus else None, processes=max(gpus, 1),
        attempts=1, wall_seconds=hours * 3600, gpu_seconds=gpu_seconds,
        gpu_hours=gpu_seconds / 3600, cpu_seconds=60.0, cpu_hours=60 / 3600,
        price_per_gpu_hour_usd=price, price_source="test", cpu_core_hour_usd=0.0,
        cost_usd=cost, target_usd=target, target_met=None if target is None else cost <= target,
        tokens_trained=1000 if job == "train" else 0, api_cost_usd=api,
        api={"cost_usd": api} if api else None, error="boom" if status == "failed" else None,
        started_at=started, finished_at=started.replace("T00", "T03"),
    )


# The recipe in miniature: generation (API spend only), two training runs (one over the $100
# target on Kubernetes, one under its own $50 target on Slurm), an evaluation.
RUNS = [
    make_record("gen-1", "generate", "local", api=3.25),
    make_record("train-big", "train", "k8s", gpus=8, hours=3, price=5.0, gpu_type="a100-80gb",
                started="2026-11-02T00:00:00Z"),  # 24 GPU-h, $120 > $100
    make_record("train-small", "train", "slurm", gpus=2, hours=1, price=2.0, target=50.0,
                gpu_type="a100-80gb", started="2026-11-03T00:00:00Z"),  # 2 GPU-h, $4 <= $50
    make_record("eval-1", "evaluate", "local", gpus=1, hours=0.5, price=2.0, api=1.5,
                gpu_type="a100-80gb", started="2026-11-04T00:00:00Z"),  # 0.5 GPU-h, $1
]


def _write_runs(runs_dir: Path, records: list[RunRecord]) -> None:
    for rec in records:
        (runs_dir / rec.run_id).mkdir(parents=True, exist_ok=True)
        rec.write(runs_dir / rec.run_id)


# --- ledger -----------------------------------------------------------------------------


def test_ledger_upsert_keeps_one_row_per_run(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    first = make_record("r1", "train", "slurm", gpus=2, hours=1, price=2.0, gpu_type="a100-80gb")
    ledger.record_run(first, path)
    resumed = replace(first, attempts=2, gpu_hours=3.0, cost_usd=6.0, status="completed")
    ledger.record_run(resumed, path)  # a requeued run keeps its id: its row is updated
    ledger.record_run(RUNS[0], path)
    with ledger.connect(path, create=False) as conn:
        rows = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [r["run_id"] for r in rows] == ["gen-1", "r1"]
        r1 = rows[1]
        assert (r1["stage"], r1["cluster"], r1["gpu_type"], r1["gpu_hours"], r1["cost_usd"]) == \
            ("train", "slurm", "a100-80gb", 3.0, 6.0)
        assert json.loads(r1["record"])["attempts"] == 2
        assert rows[0]["api_cost_usd"] == 3.25 and rows[0]["gpu_type"] is None
        assert [r.run_id for r in ledger.records(conn)] == ["gen-1", "r1"]


def _write_many(args: tuple[str, int, int]) -> int:
    path, worker, n = args
    for i in range(n):
        ledger.record_run(make_record(f"w{worker}-{i}", "generate", "local", api=0.01), Path(path))
        ledger.record_run(make_record("shared", "train", "k8s", gpus=1, hours=i, price=1.0,
                                      gpu_type="h100"), Path(path))
    return n


def test_ledger_concurrent_writers(tmp_path):
    """Jobs finishing at once (other processes) all land; none sees 'database is locked'."""
    path = tmp_path / "ledger.sqlite3"
    with cf.ProcessPoolExecutor(4) as pool:
        done = list(pool.map(_write_many, [(str(path), w, 25) for w in range(4)]))
    assert done == [25] * 4
    with ledger.connect(path, create=False) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 4 * 25 + 1
        shared = conn.execute("SELECT gpu_hours FROM runs WHERE run_id = 'shared'").fetchone()
        assert shared["gpu_hours"] == 24.0  # every writer's last update has i = 24


def test_ledger_refuses_a_file_that_is_not_sqlite(tmp_path):
    bad = tmp_path / "ledger.sqlite3"
    bad.write_text("these are not the droids\n" * 100)
    with pytest.raises(UserError, match="not a usable ledger"), ledger.connect(bad):
        pass
    with pytest.raises(UserError, match="no ledger at"), ledger.connect(tmp_path / "none", create=False):
        pass
    result = CliRunner().invoke(report_command, ["--ledger", str(bad)])
    assert result.exit_code != 0 and "not a usable ledger" in str(result.exception)


def test_ledger_location(tmp_path, monkeypatch):
    monkeypatch.delenv(ledger.LEDGER_ENV, raising=False)
    assert ledger.ledger_path(run_dir=tmp_path / "runs" / "r1") == tmp_path / "runs" / "ledger.sqlite3"
    monkeypatch.setenv(ledger.LEDGER_ENV, str(tmp_path / "elsewhere.db"))
    assert ledger.ledger_path(run_dir=tmp_path / "runs" / "r1") == tmp_path / "elsewhere.db"
    monkeypatch.setenv(ledger.JOURNAL_ENV, "delete")  # a ledger on NFS shared by several nodes
    with ledger.connect(tmp_path / "elsewhere.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_publish_writes_ledger_and_textfile_and_survives_a_dead_pushgateway(tmp_path, monkeypatch, caplog):
    """sinks.publish_record: run.json, ledger row, node_exporter textfile; a failing push only warns."""
    from alpaca_jobs.ops.sinks import publish_record as publish

    monkeypatch.delenv(ledger.LEDGER_ENV, raising=False)
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(tmp_path / "textfile"))
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, "http://127.0.0.1:9")  # nothing listens there
    rec = replace(RUNS[1], api=None)
    run_dir = tmp_path / "runs" / "train-big"
    with caplog.at_level(logging.WARNING):
        out = publish(rec, run_dir)
    assert (run_dir / "run.json").is_file() and out.run_id == "train-big"
    assert "could not push metrics of train-big" in caplog.text
    with ledger.connect(tmp_path / "runs" / "ledger.sqlite3", create=False) as conn:
        assert [r.run_id for r in ledger.records(conn)] == ["train-big"]
    prom = tmp_path / "textfile" / "alpaca_train-big.prom"
    assert sorted(p.name for p in prom.parent.iterdir()) == [prom.name]  # no temp file left
    samples = _samples(prom.read_text())
    labels = (("cluster", "k8s"), ("gpu_type", "a100-80gb"), ("run_id", "train-big"), ("stage", "train"))
    assert samples[("alpaca_job_gpu_seconds_total", labels)] == 24 * 3600
    assert samples[("alpaca_job_cost_usd", labels)] == 120.0
    assert samples[("alpaca_job_target_usd", labels)] == 100.0
    assert samples[("alpaca_job_status", (*labels, ("status", "completed")))] == 1.0


def test_a_broken_ledger_never_fails_the_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(ledger.LEDGER_ENV, str(tmp_path / "not-a-db"))
    (tmp_path / "not-a-db").write_bytes(b"\0garbage" * 512)
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.delenv(metrics.TEXTFILE_DIR_ENV, raising=False)
    with caplog.at_level(logging.WARNING):
        sinks.publish(RUNS[0], tmp_path / "runs" / "gen-1")
    assert "could not record gen-1 in the ledger" in caplog.text


# --- metrics ----------------------------------------------------------------------------


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metric_names_units_and_labels():
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry_for(RUNS[0])).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("alpaca_job_gpu_seconds", "alpaca_job_cpu_seconds", "alpaca_job_duration_seconds",
                 "alpaca_job_cost_usd", "alpaca_job_api_cost_usd", "alpaca_job_status",
                 "alpaca_job_finished_timestamp_seconds", "alpaca_job_last_success_timestamp_seconds",
                 "alpaca_job_info"):
        assert name in fams, name
    assert fams["alpaca_job_gpu_seconds"].type == "counter"
    assert "alpaca_job_target_usd" not in fams  # generation has no target unless its spec sets one
    assert "alpaca_job_gpu_seconds_total{" in text
    for fam in fams.values():
        for s in fam.samples:
            assert {"run_id", "stage", "cluster", "gpu_type"} <= set(s.labels)
    s = _samples(text)
    base = (("cluster", "local"), ("gpu_type", "none"), ("run_id", "gen-1"), ("stage", "generate"))
    assert s[("alpaca_job_api_cost_usd", base)] == 3.25
    assert s[("alpaca_job_finished_timestamp_seconds", base)] == 1793502000.0  # 2026-11-01T03:00Z


def test_serve_app_metrics_include_the_jobs_own(tmp_path):
    """The serve job registers a live collector: its /metrics shows alpaca_job_* as they stand."""
    from alpaca_jobs.job import Payload
    from alpaca_jobs.runtime import new_job
    from alpaca_jobs.serve.app import ServeState, create_app
    from alpaca_jobs.spec import load_spec

    loaded = load_spec(ROOT / "jobs/serve-local.yaml", ["resources.gpus_per_node=1",
                                                       "resources.gpu_type=a100-80gb"])
    job = new_job(Payload.build(loaded, "serve-live", "k8s", tmp_path / "serve-live"))
    job.meter.t0 = time.time() - 7200  # as if the process had started two hours ago
    collector = metrics.RecordCollector(lambda: job.record("running"))  # as serve_body does
    app = create_app(ServeState(engine=None, flags=None, collectors=[collector]))
    route = next(r for r in app.routes if getattr(r, "path", None) == "/metrics")
    body = asyncio.run(route.endpoint()).body.decode()
    assert "alpaca_serve_requests_total" in body  # the server's own traffic metrics still there
    labels = (("cluster", "k8s"), ("gpu_type", "a100-80gb"), ("run_id", "serve-live"), ("stage", "serve"))
    s = _samples(body)
    assert 7200 <= s[("alpaca_job_gpu_seconds_total", labels)] < 7300  # 2 h so far on 1 GPU
    assert s[("alpaca_job_cost_usd", labels)] > 0
    assert s[("alpaca_job_status", (*labels, ("status", "running")))] == 1.0
    assert ("alpaca_job_finished_timestamp_seconds", labels) not in s


# --- report -----------------------------------------------------------------------------


def test_summary_numbers():
    s = report.summarize(RUNS)
    assert list(s.by_stage) == ["generate", "train", "evaluate"]
    train = s.by_stage["train"]
    assert (train.runs, train.gpu_hours, train.cost_usd, train.api_cost_usd) == (2, 26.0, 124.0, 0.0)
    gen, ev = s.by_stage["generate"], s.by_stage["evaluate"]
    assert (gen.gpu_hours, gen.cost_usd, gen.api_cost_usd) == (0.0, 0.0, 3.25)
    assert (ev.gpu_hours, ev.cost_usd, ev.api_cost_usd, ev.total_usd) == (0.5, 1.0, 1.5, 2.5)
    assert {k: v.gpu_hours for k, v in s.by_cluster.items()} == {"k8s": 24.0, "local": 0.5, "slurm": 2.0}
    assert (s.total.runs, s.total.gpu_hours, s.total.cost_usd, s.total.api_cost_usd) == (4, 26.5, 125.0, 4.75)
    verdicts = {r["run_id"]: (r["target_usd"], r["target_met"]) for r in s.training}
    assert verdicts == {"train-big": (100.0, False), "train-small": (50.0, True)}


def test_report_command_table_png_html_json(tmp_path, monkeypatch):
    monkeypatch.delenv(ledger.LEDGER_ENV, raising=False)
    runs = tmp_path / "runs"
    _write_runs(runs, RUNS)
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text("{not json")  # skipped with a warning
    png, page, js = tmp_path / "cost.png", tmp_path / "cost.html", tmp_path / "cost.json"
    result = CliRunner().invoke(report_command, [
        "--runs-dir", str(runs), "--scan", str(runs), "--png", str(png), "--html", str(page),
        "--json", str(js)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "imported 4 run record(s)" in out
    assert (runs / "ledger.sqlite3").is_file()  # the default: beside the runs
    assert re.search(r"train-big\s+train\s+k8s\s+a100-80gb\s+completed\s+24\.0000\s+\$120\.00\s+"
                     r"\$0\.00\s+\$120\.00\s+OVER \$100\.00", out), out
    assert re.search(r"train-small .* MET \$50\.00", out)
    assert re.search(r"^train\s+2\s+26\.0000\s+\$124\.00\s+\$0\.00\s+\$124\.00$", out, re.M), out
    assert re.search(r"^generate\s+1\s+0\.0000\s+\$0\.00\s+\$3\.25\s+\$3\.25$", out, re.M)
    assert re.search(r"^all runs\s+4\s+26\.5000\s+\$125\.00\s+\$4\.75\s+\$129\.75$", out, re.M)
    assert "1 met, 1 over (train-big)" in out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (450, 1500)
    html_text = page.read_text()
    assert "data:image/png;base64," in html_text and "<td>train-big</td>" in html_text
    for number in ("26.5000", "$125.00", "$4.75", "$129.75", "OVER $100.00", "MET $50.00"):
        assert number in html_text, number
    summary = json.loads(js.read_text())
    assert summary["total"]["gpu_hours"] == 26.5 and summary["by_stage"]["train"]["cost_usd"] == 124.0
    # A second report reads the ledger alone; a re-scan updates rows instead of adding them.
    again = CliRunner().invoke(report_command, ["--runs-dir", str(runs), "--json", "-"])
    assert again.exit_code == 0 and json.loads(again.output)["total"]["runs"] == 4


def test_report_module_entry_point_and_lazy_imports(tmp_path):
    runs = tmp_path / "runs"
    _write_runs(runs, RUNS[:2])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ledger.LEDGER_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "alpaca_jobs", "report", "--scan", str(runs),
                           "--ledger", str(tmp_path / "l.sqlite3")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "OVER $100.00" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "alpaca_jobs", "report", "--ledger",
                              str(tmp_path / "nope.sqlite3")], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "error: no ledger at" in missing.stderr
    code = ("import sys, alpaca_jobs.ops.report, alpaca_jobs.ops.ledger, alpaca_jobs.ops.sinks;"
            "bad = {'matplotlib', 'torch', 'prometheus_client'} & set(sys.modules); assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def _cpu_runs() -> list[RunRecord]:
    """Two CPU training runs as the local backend records them: no GPUs, no prices."""
    return [replace(make_record(f"cpu-{i}", "train", "local"), cpu_seconds=3600.0 * (i + 1),
                    cpu_hours=float(i + 1), wall_seconds=600.0) for i in range(2)]


def _pixels(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_report_chart_of_cpu_runs_shows_cpu_hours_not_zero_bars():
    """CPU runs: GPU-hours and cost are all zero; the usage panel draws CPU-hours instead (its
    axis says so) and a panel with nothing but zeros says that in words, on no -0.04..0.04 axis."""
    import numpy as np

    s = report.summarize(_cpu_runs())
    fig = report.report_figure(s)
    usage, cost, target = fig.axes
    assert usage.get_ylabel() == "CPU-hours (no GPU runs)" and usage.get_title() == "CPU-hours by stage"
    assert usage.get_ylim()[0] == 0 and usage.get_ylim()[1] == pytest.approx(3.3)  # 1 + 2 CPU-h, +10%
    assert not cost.axison and "all zero" in cost.texts[0].get_text()
    assert target.get_ylim()[0] == 0 and target.get_ylim()[1] >= 100  # $0 runs against $100
    for ax in fig.axes:
        assert not (ax.axison and ax.get_ylim()[0] < 0), ax.get_title()
    img = _pixels(report.render_png(s))
    assert img.shape[:2] == (450, 1500)
    blue = np.all(np.abs(img - [31, 119, 180]) < 30, axis=2)  # the bars' colour (tab:blue)
    left = blue[:, :500]
    assert left.sum() > 20_000  # a tall bar in the usage panel, not a zero-height one
    rows = np.nonzero(left.any(axis=1))[0]
    assert rows.max() - rows.min() > 200  # it spans most of the plot's height
    assert blue[:, 500:].sum() == 0  # no bars elsewhere: cost is zero and said so


def test_report_chart_keeps_gpu_hours_when_there_are_gpu_runs():
    fig = report.report_figure(report.summarize(RUNS))
    assert fig.axes[0].get_ylabel() == "GPU-hours" and fig.axes[0].get_ylim()[1] == pytest.approx(26.0 * 1.1)


def test_run_summary_has_the_loss_curve(tmp_path):
    """summary.html and loss.png for a run that logged losses; summary.html alone otherwise."""
    import numpy as np

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    rows = [{"step": i, "loss": 5.0 * 0.9 ** i, "lr": 1e-3} for i in range(1, 41)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = replace(RUNS[1], device="cpu", steps=40, total_steps=40, first_loss=rows[0]["loss"],
                  final_loss=rows[-1]["loss"], tokens_trained=1, target_tokens_trained=1,
                  tokens_per_second=1.0, train_loop_seconds=1.0, data={})
    written = report.write_run_summary(rec, run_dir)
    assert [p.name for p in written] == ["loss.png", "summary.html"]
    img = _pixels((run_dir / "loss.png").read_bytes())
    ys, xs = np.nonzero(np.all(np.abs(img - [31, 119, 180]) < 40, axis=2))
    assert len(xs) > 500 and xs.max() - xs.min() > 500 and ys.max() - ys.min() > 150
    # Falling loss: the curve's left end sits higher on the image (smaller y) than its right end.
    assert ys[xs < xs.min() + 10].mean() < ys[xs > xs.max() - 10].mean() - 100
    page = (run_dir / "summary.html").read_text()
    assert "<td>steps</td><td>40/40</td>" in page and "data:image/png;base64," in page
    other = tmp_path / "gen"
    other.mkdir()
    plain = replace(RUNS[0], api=None)
    assert [p.name for p in report.write_run_summary(plain, other)] == ["summary.html"]


def test_textfile_directory_is_one_value_everywhere():
    """The node_exporter textfile directory: the specs' slurm.textfile_dir, the rendered sbatch,
    dashboards/ and the metrics module all name metrics.DEFAULT_TEXTFILE_DIR."""
    from alpaca_jobs.spec import load_spec

    found = {}
    for spec in sorted((ROOT / "jobs").glob("*.yaml")):
        if "job" not in yaml.safe_load(spec.read_text()):
            continue  # a pipeline file, not a job spec
        value = load_spec(spec).spec.slurm.textfile_dir
        if value:
            found[spec.name] = value
    assert len(found) >= 3, found
    pattern = re.compile(r"(?:ALPACA_JOBS_TEXTFILE_DIR=|textfile\.directory=)'?([^\s`'\"]+)")
    for path in [*(ROOT / "dashboards").rglob("*.*"), *(ROOT / "slurm").glob("*.sbatch"),
                 ROOT / "alpaca_jobs/ops/metrics.py"]:
        for value in pattern.findall(path.read_text()):
            found[str(path.relative_to(ROOT))] = value
    assert any(k.startswith("dashboards/") for k in found) and any(k.startswith("slurm/") for k in found)
    assert set(found.values()) == {metrics.DEFAULT_TEXTFILE_DIR}, found


def test_stale_pushgateway_groups():
    now = 1_800_000_000.0

    def group(run_id, finished=None, pushed=now, job=metrics.PUSH_JOB):
        g = {"labels": {"job": job, "run_id": run_id},
             "push_time_seconds": {"metrics": [{"value": str(pushed)}]}}
        if finished is not None:
            g["alpaca_job_finished_timestamp_seconds"] = {"metrics": [{"value": str(finished)}]}
        return g

    groups = [group("old", finished=now - 2 * 86400), group("recent", finished=now - 60),
              group("running", pushed=now - 5), group("dead", pushed=now - 3 * 86400),
              group("other-job", finished=now - 9 * 86400, job="someone-else")]
    assert metrics.stale_groups(groups, 86400, now) == ["old", "dead"]


# --- checked-in dashboard and rules -------------------------------------------------------


def dashboard_panels() -> list[dict]:
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def dashboard_exprs() -> dict[str, str]:
    return {f"{p['title']}/{t['refId']}": t["expr"]
            for p in dashboard_panels() for t in p.get("targets", [])}


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r.get("alert") or r["record"]: r["expr"] for g in groups for r in g["rules"]}


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends: its variables replaced (cluster = All)."""
    return (expr.replace("$__rate_interval", "5s").replace("$__interval", "2s")
            .replace("$__range", "5m").replace('"$cluster"', '".*"'))


def test_dashboard_is_provisionable():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ds = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds and ds[0]["query"] == "prometheus" and ds[0]["name"] == "datasource"
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    titles = {p["title"] for p in panels}
    assert {GPU_HOURS_BY_STAGE, "GPU-hours by cluster", "Cost per training run (target $100)",
            "Runs over time by stage and status", "Requests per second"} <= titles
    leftover = [e for e in map(grafana_to_promql, dashboard_exprs().values()) if "$" in e]
    assert not leftover  # every Grafana variable a query uses is one the test knows
    prov = ROOT / "dashboards/grafana/provisioning"
    assert yaml.safe_load((prov / "datasources.yaml").read_text())["datasources"][0]["type"] == "prometheus"
    assert yaml.safe_load((prov / "dashboards.yaml").read_text())["providers"][0]["type"] == "file"


UNITS = {"gpu": "suffix: GPU-h", "usd": "currencyUSD"}


def _measure(expr: str) -> str | None:
    if "alpaca_job_gpu_seconds" in expr:
        return "gpu"
    if re.search(r"alpaca_job_(api_)?cost_usd|alpaca_job_target_usd", expr) and " count(" not in f" {expr}":
        return "usd"
    return None


def test_dashboard_units_and_time_range():
    """One unit per panel (GPU-hours and USD never share an axis), and every instant 'all runs'
    figure is taken over the time picker's range."""
    checked = 0
    for p in dashboard_panels():
        targets = p.get("targets", [])
        measures = {_measure(t["expr"]) for t in targets} - {None}
        assert len(measures) <= 1, (p["title"], measures)
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if measures:
            assert unit == UNITS[measures.pop()], (p["title"], unit)
            checked += 1
        if "GPU-h" in p["title"] and p["type"] != "row":
            assert unit == UNITS["gpu"], p["title"]
        for t in targets:
            if t.get("instant") and "alpaca_job_" in t["expr"]:
                assert "[$__range]" in t["expr"] and "max_over_time(" in t["expr"], (p["title"], t["expr"])
    assert checked >= 10
    titles = {p["title"] for p in dashboard_panels()}
    assert {"Serve jobs: GPU-hours so far", "Serve jobs: cost so far"} <= titles


# --- against a real Prometheus and Pushgateway --------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A Prometheus and Pushgateway of this module's own (tests/clusters/prometheus.sh with a
    state dir and ports of its own, stopped at the end): the tests wipe the Pushgateway, and a
    shared one would lose another run's groups."""
    script = str(ROOT / "tests/clusters/prometheus.sh")
    env = {**os.environ, "PROMETHEUS_TEST_DIR": str(tmp_path_factory.mktemp("prometheus")),
           "PROMETHEUS_PORT": str(_free_port()), "PUSHGATEWAY_PORT": str(_free_port())}
    proc = subprocess.run([script, "up"], capture_output=True, text=True, timeout=600, env=env)
    try:
        assert proc.returncode == 0, f"could not start Prometheus/Pushgateway:\n{proc.stderr[-3000:]}"
        urls = dict(line.split("=", 1) for line in proc.stdout.split() if "=" in line)
        yield urls["PROMETHEUS_URL"], urls["PUSHGATEWAY_URL"]
    finally:
        subprocess.run([script, "down"], capture_output=True, timeout=120, env=env)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def query(prom: str, expr: str) -> dict:
    try:
        return _get(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    except urllib.error.HTTPError as exc:  # 400: a bad expression, with Prometheus' reason
        return json.loads(exc.read())


def _wait_for(prom: str, expr: str, want: float, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        res = query(prom, expr)["data"]["result"]
        if res and float(res[0]["value"][1]) == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expr} did not reach {want} within {timeout} s")


def _wipe(prom: str, gateway: str) -> None:
    req = urllib.request.Request(f"{gateway}/api/v1/admin/wipe", method="PUT")
    urllib.request.urlopen(req, timeout=10).close()  # only this test's runs from here on
    _wait_for(prom, 'count(alpaca_job_info) or vector(0)', 0)


def _iso(offset_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_seconds))


def _alerting(prom: str, alert: str) -> list[str]:
    return sorted(r["metric"]["run_id"] for r in query(prom, rule_exprs()[alert])["data"]["result"])


@pytest.mark.integration
@pytest.mark.prometheus
def test_alerts_forget_finished_runs_and_old_groups_leave_the_pushgateway(prometheus, tmp_path, monkeypatch):
    """A failed, over-budget run alerts while it is recent; one that ended two hours ago does
    not, although its final push is still there; the next run to end deletes that old group
    (ALPACA_JOBS_PUSHGATEWAY_KEEP) and keeps the recent one."""
    prom, gateway = prometheus
    _wipe(prom, gateway)
    tag = uuid.uuid4().hex[:6]
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, gateway)
    monkeypatch.setenv(ledger.LEDGER_ENV, str(tmp_path / "ledger.sqlite3"))
    monkeypatch.delenv(metrics.TEXTFILE_DIR_ENV, raising=False)
    monkeypatch.delenv(metrics.KEEP_ENV, raising=False)  # default: a day, so both stay for now
    big = make_record("x", "train", "k8s", gpus=8, hours=3, price=5.0, gpu_type="a100-80gb", status="failed")
    old, new = f"old-{tag}", f"new-{tag}"
    sinks.publish(replace(big, run_id=old, finished_at=_iso(-2 * 3600)), tmp_path / old)
    sinks.publish(replace(big, run_id=new, finished_at=_iso(-60)), tmp_path / new)
    running = replace(big, run_id=f"running-{tag}", status="running")
    sinks.publish(running, tmp_path / "running")  # running: no finished time yet
    _wait_for(prom, "count(alpaca_job_info)", 3)
    assert _alerting(prom, "AlpacaJobFailed") == [new]
    assert _alerting(prom, "AlpacaTrainingRunOverBudget") == sorted([new, f"running-{tag}"])

    def groups() -> set[str]:
        data = _get(f"{gateway}/api/v1/metrics")["data"]
        return {g["labels"].get("run_id") for g in data}

    assert groups() == {old, new, f"running-{tag}"}
    monkeypatch.setenv(metrics.KEEP_ENV, "3600")
    sinks.publish(replace(RUNS[0], run_id=f"gen-{tag}", finished_at=_iso(0)), tmp_path / "gen")
    assert groups() == {new, f"running-{tag}", f"gen-{tag}"}  # the run ended 2 h ago is gone


@pytest.mark.integration
@pytest.mark.prometheus
def test_promtool_checks_rules_and_example_config(prometheus):
    for args in (["check", "rules", str(ALERTS)],
                 ["check", "config", str(ROOT / "dashboards/prometheus/prometheus.yml")]):
        proc = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.integration
@pytest.mark.prometheus
def test_dashboard_and_alert_queries_against_prometheus(prometheus, tmp_path, monkeypatch):
    prom, gateway = prometheus
    _wipe(prom, gateway)
    tag = uuid.uuid4().hex[:6]
    # Runs that ended a minute ago: alerts look at runs running or ended within the hour.
    runs = [replace(r, run_id=f"{r.run_id}-{tag}", started_at=_iso(-3 * 3600), finished_at=_iso(-60))
            for r in RUNS]
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, gateway)  # the jobs' own path: publish -> push
    monkeypatch.setenv(ledger.LEDGER_ENV, str(tmp_path / "ledger.sqlite3"))
    monkeypatch.delenv(metrics.TEXTFILE_DIR_ENV, raising=False)
    for rec in runs:
        sinks.publish(rec, tmp_path / rec.run_id)
    _wait_for(prom, "count(alpaca_job_info)", len(runs))

    exprs = {**{f"dashboard {k}": grafana_to_promql(v) for k, v in dashboard_exprs().items()},
             **{f"rule {k}": v for k, v in rule_exprs().items()}}
    bad = {k: r.get("error") for k, e in exprs.items() if (r := query(prom, e))["status"] != "success"}
    assert not bad, bad
    assert len(exprs) >= 20

    panel = next(p for p in dashboard_panels() if p["title"] == GPU_HOURS_BY_STAGE)
    # Over the time range Prometheus still remembers runs wiped from the Pushgateway: this test's only.
    expr = grafana_to_promql(panel["targets"][0]["expr"]).replace('=~".*"', f'=~".*", run_id=~".*-{tag}"')
    res = query(prom, expr)["data"]["result"]
    by_stage = {r["metric"]["stage"]: float(r["value"][1]) for r in res}
    assert by_stage == {"generate": 0.0, "train": 26.0, "evaluate": 0.5}

    res = query(prom, rule_exprs()["AlpacaTrainingRunOverBudget"])["data"]["result"]
    assert [(r["metric"]["run_id"], float(r["value"][1])) for r in res] == [(f"train-big-{tag}", 120.0)]

    end = time.time() + 30  # and Prometheus itself evaluates the rule: the alert fires
    firing = []
    while time.time() < end and not firing:
        alerts = _get(f"{prom}/api/v1/alerts")["data"]["alerts"]
        firing = [a["labels"]["run_id"] for a in alerts
                  if a["labels"]["alertname"] == "AlpacaTrainingRunOverBudget" and a["state"] == "firing"]
        time.sleep(0.5)
    assert firing == [f"train-big-{tag}"]
    rules = _get(f"{prom}/api/v1/rules")["data"]["groups"]
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
