"""Run records as Prometheus metrics, for dashboards and alerts.

One record becomes one set of ``alpaca_job_*`` samples, labelled by ``run_id``, ``stage``
(generate/train/serve/evaluate), ``cluster`` (local/slurm/k8s) and ``gpu_type``. Base units
(seconds, US dollars); counters end in ``_total``. Where they go:

* ``ALPACA_JOBS_PUSHGATEWAY=http://host:9091``: batch jobs push them while they run (every
  ``ALPACA_JOBS_METRICS_INTERVAL`` seconds, status running) and when they finish, one group per
  run (``job="alpaca_jobs", run_id=...``); a requeued run replaces its group. A run that ends
  deletes the groups of runs that ended more than ``ALPACA_JOBS_PUSHGATEWAY_KEEP`` seconds
  (default a day) ago: Prometheus keeps their history, the ledger their figures, and alerts
  stop looking at runs an hour after they end. Scrape the Pushgateway with
  ``honor_labels: true`` so these labels survive.
* ``ALPACA_JOBS_TEXTFILE_DIR=/var/lib/prometheus/node-exporter``: they are written to
  ``alpaca_<run_id>.prom`` there (atomically) for node_exporter's textfile collector (Slurm nodes).
* The serve job is scraped: ``LiveJobCollector`` adds its own ``alpaca_job_*`` samples, as they
  stand at scrape time, to the server's ``/metrics``.

A sink that fails logs a warning; it never fails the run.
"""

from __future__ import annotations

import logging
import os
import re
import time
from calendar import timegm
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alpaca_jobs.ops.record import STATUSES, RunRecord

PUSHGATEWAY_ENV = "ALPACA_JOBS_PUSHGATEWAY"
TEXTFILE_DIR_ENV = "ALPACA_JOBS_TEXTFILE_DIR"
# node_exporter's textfile directory: Debian's prometheus-node-exporter package reads this one
# (its --collector.textfile.directory). jobs/*.yaml (slurm.textfile_dir), dashboards/ and the
# docs use the same value; tests/test_ops.py checks that they agree.
DEFAULT_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PUSH_JOB = "alpaca_jobs"  # the Pushgateway's job label for every run's group
LABELS = ("run_id", "stage", "cluster", "gpu_type")

log = logging.getLogger(__name__)


def label_values(record: RunRecord) -> list[str]:
    return [record.run_id, record.job, record.backend, record.gpu_type or "none"]


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return float(timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def _finished_at(r: RunRecord) -> float | None:
    return None if r.status == "running" else _timestamp(r.finished_at)


def _succeeded_at(r: RunRecord) -> float | None:
    return _timestamp(r.finished_at) if r.status == "completed" else None


def _trains(r: RunRecord) -> bool:
    return r.total_steps > 0


# (counter?, name, help, value of a record; None: no sample). Counters are exposed as <name>_total.
FAMILIES: list[tuple[bool, str, str, Callable[[RunRecord], float | None]]] = [
    (True, "alpaca_job_gpu_seconds", "GPU-seconds held: job wall seconds x GPUs, summed over attempts",
     lambda r: r.gpu_seconds),
    (True, "alpaca_job_cpu_seconds", "CPU seconds used by the job's processes", lambda r: r.cpu_seconds),
    (False, "alpaca_job_duration_seconds", "Job wall seconds over all attempts (not queue time)",
     lambda r: r.wall_seconds),
    (False, "alpaca_job_gpus", "GPUs the job holds (nodes x GPUs per node)", lambda r: r.gpus),
    (False, "alpaca_job_attempts", "Attempts (a requeued or resumed run has several)", lambda r: r.attempts),
    (False, "alpaca_job_cost_usd", "Compute cost (GPU-hours and CPU-hours x price)", lambda r: r.cost_usd),
    (False, "alpaca_job_api_cost_usd", "Spend on OpenAI-compatible APIs (generate, evaluate)",
     lambda r: r.api_cost_usd),
    (False, "alpaca_job_gpu_hour_price_usd", "Price per GPU-hour the cost assumes",
     lambda r: r.price_per_gpu_hour_usd),
    (False, "alpaca_job_target_usd", "Compute budget of the run ($100 for training unless "
     "cost.target_usd says otherwise)", lambda r: r.target_usd),
    (False, "alpaca_job_started_timestamp_seconds", "When the run started (Unix time)",
     lambda r: _timestamp(r.started_at)),
    (False, "alpaca_job_finished_timestamp_seconds", "When the run ended (Unix time)", _finished_at),
    (False, "alpaca_job_last_success_timestamp_seconds", "When the run completed (Unix time)", _succeeded_at),
    (True, "alpaca_job_tokens_trained", "Tokens computed in training",  # runs that train
     lambda r: float(r.tokens_trained) if _trains(r) else None),
    (False, "alpaca_job_steps", "Optimizer steps done (live while a training run runs)",
     lambda r: r.steps if _trains(r) else None),
    (False, "alpaca_job_total_steps", "Optimizer steps the training run will take",
     lambda r: r.total_steps or None),
    (False, "alpaca_job_loss", "Training loss of the latest step", lambda r: r.final_loss),
]


def record_metrics(record: RunRecord) -> Iterator[Metric]:
    """The metric families of one run record (finished, or as it stands for a live job)."""
    labels, values = list(LABELS), label_values(record)
    for is_counter, name, doc, value_of in FAMILIES:
        value = value_of(record)
        if value is not None:
            fam = (CounterMetricFamily if is_counter else GaugeMetricFamily)(name, doc, labels=labels)
            fam.add_metric(values, float(value))
            yield fam
    status = GaugeMetricFamily("alpaca_job_status", "1 for the run's status, 0 for the others",
                               labels=[*labels, "status"])
    for s in sorted({*STATUSES, record.status}):
        status.add_metric([*values, s], 1.0 if s == record.status else 0.0)
    yield status
    info = GaugeMetricFamily("alpaca_job_info", "Constant 1; what ran, and the price source",
                             labels=[*labels, "model", "price_source"])
    info.add_metric([*values, record.model_dir or "", record.price_source or ""], 1.0)
    yield info


class RecordCollector(Collector):
    """Exposes one run record; ``record`` may be a callable that builds it at each scrape."""

    def __init__(self, record: RunRecord | Callable[[], RunRecord]) -> None:
        self._record = record

    def collect(self) -> Iterator[Metric]:
        rec = self._record() if callable(self._record) else self._record
        yield from record_metrics(rec)


def registry_for(record: RunRecord) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(RecordCollector(record))
    return reg


def push(record: RunRecord, gateway: str, timeout: float = 5.0) -> bool:
    """PUT the run's metrics as its own group (a requeued run replaces them); False on failure."""
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(gateway, job=PUSH_JOB, registry=registry_for(record),
                        grouping_key={"run_id": record.run_id}, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - metrics are best effort; the run must not fail
        log.warning("could not push metrics of %s to the Pushgateway %s: %s",
                    record.run_id, gateway, exc)
        return False
    return True


KEEP_ENV = "ALPACA_JOBS_PUSHGATEWAY_KEEP"
DEFAULT_KEEP_SECONDS = 86_400.0  # a finished run's group stays a day; Prometheus keeps its history


def _group_time(group: dict[str, Any], name: str) -> float | None:
    try:
        return float(group[name]["metrics"][0]["value"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def stale_groups(groups: list[dict[str, Any]], keep_seconds: float, now: float) -> list[str]:
    """Run ids of our Pushgateway groups to delete: runs that finished more than
    ``keep_seconds`` ago, and runs whose last push (a job killed before its final record) is
    that old. ``groups``: the Pushgateway's ``/api/v1/metrics`` data."""
    stale = []
    for g in groups:
        labels = g.get("labels", {})
        if labels.get("job") != PUSH_JOB or "run_id" not in labels:
            continue
        ended = _group_time(g, "alpaca_job_finished_timestamp_seconds")
        last = ended if ended is not None else _group_time(g, "push_time_seconds")
        if last is not None and now - last > keep_seconds:
            stale.append(labels["run_id"])
    return stale


def prune(gateway: str, keep_seconds: float | None = None, timeout: float = 5.0) -> list[str]:
    """Delete the groups ``stale_groups`` names, so finished runs do not stay in the
    Pushgateway (and in every alert) forever. Best effort: returns the run ids deleted."""
    import json
    import urllib.request

    from prometheus_client import delete_from_gateway

    if keep_seconds is None:
        keep_seconds = float(os.environ.get(KEEP_ENV, "").strip() or DEFAULT_KEEP_SECONDS)
    url = gateway if "://" in gateway else f"http://{gateway}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/metrics", timeout=timeout) as resp:
            groups = json.loads(resp.read())["data"]
        stale = stale_groups(groups, keep_seconds, time.time())
        for run_id in stale:
            delete_from_gateway(gateway, job=PUSH_JOB, grouping_key={"run_id": run_id}, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - cleaning up is best effort; the run must not fail
        log.warning("could not prune old groups from the Pushgateway %s: %s", gateway, exc)
        return []
    if stale:
        log.info("deleted %d finished run(s) from the Pushgateway: %s", len(stale), ", ".join(stale))
    return stale


def textfile_path(directory: Path, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return directory / f"alpaca_{safe}.prom"


def write_textfile(record: RunRecord, directory: Path) -> Path | None:
    """Write ``alpaca_<run_id>.prom`` atomically (temp file + rename in the same directory)."""
    from prometheus_client import write_to_textfile

    path = textfile_path(directory, record.run_id)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry_for(record))
    except OSError as exc:
        log.warning("could not write the metrics of %s to %s: %s", record.run_id, path, exc)
        return None
    return path


def sinks_configured() -> bool:
    """Whether the environment names any metrics sink (the live pushes are skipped otherwise)."""
    return any(os.environ.get(name, "").strip() for name in (PUSHGATEWAY_ENV, TEXTFILE_DIR_ENV))


def publish(record: RunRecord) -> None:
    """Send the record to every metrics sink the environment configures (none by default)."""
    gateway = os.environ.get(PUSHGATEWAY_ENV, "").strip()
    if gateway:
        push(record, gateway)
        if record.status != "running":
            prune(gateway)  # runs that ended long ago leave the Pushgateway as this one ends
    textfile_dir = os.environ.get(TEXTFILE_DIR_ENV, "").strip()
    if textfile_dir:
        write_textfile(record, Path(textfile_dir))
