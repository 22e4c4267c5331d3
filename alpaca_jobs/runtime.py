"""The job runtime: what every worker process of every kind does around the kind's own work.

``run_job(payload, body)`` owns the environment (offline hub, threads), logging, the usage
meter (from process start: an attempt that dies while loading still bills), stop signals
(SIGTERM on cancel or preemption, SIGUSR2 on the scheduler's time-limit warning), the completed
or failed run record. It knows no scheduler: the payload's launch description (alpaca_jobs.launch)
names the hooks that read the scheduler's rank variables and that run the job again after a
time-limit checkpoint. A kind's body
(``Kind.body``) only does its work: ``body(job) -> Outcome | None`` (None: not rank 0).

Launch paths: submitit runs ``run_payload(payload_dict)``; everything else (a Kubernetes pod,
torchrun, a plain sbatch script) runs ``python -m alpaca_jobs.runtime --payload FILE`` or
``... --spec SPEC --run-dir DIR``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpaca_jobs.common import failures, kinds
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.signals import StopFlag
from alpaca_jobs.job import Job, Outcome, Payload
from alpaca_jobs.launch import Launch

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord

log = logging.getLogger(__name__)
NOISY = ("accelerate", "transformers", "torch.distributed", "httpx", "openai")


def run_payload(payload: dict[str, Any]) -> RunRecord | None:
    """submitit's entry point for every kind: the payload as plain data."""
    p = Payload.from_dict(payload)
    return run_job(p, kinds.resolve(kinds.get(p.kind).body))


def run_job(payload: Payload, body: Callable[[Job], Outcome | None]) -> RunRecord | None:
    """Run ``body`` as a job: returns the published record on rank 0, None elsewhere."""
    kind = kinds.get(payload.kind)
    _environment(payload, kind)
    job = new_job(payload)
    job.meter.start()
    if job.rank == 0:
        log.info("%s job %s: started (attempt %s, %d process(es)); run dir %s", payload.kind,
                 payload.run_id, job.meter.attempt, payload.loaded.spec.resources.world_size, job.run_dir)
        if payload.launch.rendezvous is not None and "MASTER_ADDR" in os.environ:
            log.info("rendezvous at %s", _rendezvous())
    previous = _install_stop(job.stop, kind.stop)
    pusher = LivePusher.start(job)
    try:
        outcome = body(job)
    except BaseException as exc:
        pusher.stop()
        stopped = isinstance(exc, KeyboardInterrupt | SystemExit)
        error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        if not stopped and not failures.peer_lost(exc):
            failures.mark_no_retry(job.run_dir, error)  # its own error: a restart would repeat it
        _publish(job, Outcome("interrupted" if stopped else "failed", {**job.partial, "error": error}))
        raise
    finally:
        _restore(previous)
    pusher.stop()  # before the final record: a late "running" push must not follow it
    record = _publish(job, outcome) if outcome is not None else None
    if outcome is not None and outcome.status == "interrupted" and job.stop.signum == signal.SIGUSR2:
        _on_time_limit(job)
    return record


def new_job(payload: Payload) -> Job:
    """The job a body gets: its meter counts from this process's start."""
    from alpaca_jobs.ops.usage import UsageMeter

    job = Job(payload, StopFlag(), UsageMeter(payload.run_dir),
              time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    job.record = lambda status, **fields: _record(job, status, **fields)
    return job


def _record(job: Job, status: str, **fields: Any):
    """The run record as it stands now (usage of every process and attempt so far)."""
    from alpaca_jobs.ops.records import build_record
    from alpaca_jobs.ops.usage import read_usage

    job.meter.tick(force=True)
    return build_record(job.payload.to_dict(), job.loaded, status, read_usage(job.run_dir), job.started,
                        **fields)


METRICS_INTERVAL_ENV = "ALPACA_JOBS_METRICS_INTERVAL"
DEFAULT_METRICS_INTERVAL = 30.0  # seconds between a running job's metric pushes


class LivePusher:
    """Rank 0 publishes the run's metrics as they stand (status running) every interval, from a
    daemon thread, so dashboards show batch jobs while they run, not only when they end. The
    interval: env ALPACA_JOBS_METRICS_INTERVAL (seconds; 0 turns it off), default 30 s. Only
    when a metrics sink is configured (ALPACA_JOBS_PUSHGATEWAY / ALPACA_JOBS_TEXTFILE_DIR)."""

    def __init__(self, job: Job | None, interval: float) -> None:
        import threading

        self.job, self.interval = job, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="alpaca-metrics", daemon=True)

    @classmethod
    def start(cls, job: Job) -> LivePusher:
        from alpaca_jobs.ops.metrics import sinks_configured

        interval = _metrics_interval()
        pusher = cls(job, interval)
        if job.rank == 0 and interval > 0 and sinks_configured():
            pusher.thread.start()
        return pusher

    def _loop(self) -> None:
        from alpaca_jobs.ops.metrics import publish

        while True:
            try:
                publish(self.job.record("running", **self.job.partial))
            except Exception as exc:  # noqa: BLE001 - live metrics are best effort
                log.warning("could not publish the running metrics: %s", exc)
            if self.done.wait(self.interval):
                return

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)


def _metrics_interval() -> float:
    raw = os.environ.get(METRICS_INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_METRICS_INTERVAL
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %.0f", METRICS_INTERVAL_ENV, raw,
                    DEFAULT_METRICS_INTERVAL)
        return DEFAULT_METRICS_INTERVAL
    return max(value, 0.0)


def _publish(job: Job, outcome: Outcome) -> RunRecord | None:
    if job.rank != 0:
        return None
    from alpaca_jobs.ops.sinks import publish_record

    try:
        return publish_record(job.record(outcome.status, **outcome.fields), job.run_dir)
    except Exception:  # noqa: BLE001 - on the failure path, never mask the original error
        if outcome.status != "failed":
            raise
        log.exception("could not write the failed run record")
        return None


def _environment(payload: Payload, kind: kinds.Kind) -> None:
    # Before torch is imported: one thread per core given (oversubscription halves speed).
    os.environ.setdefault("OMP_NUM_THREADS", str(payload.loaded.spec.resources.cpus_per_process))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hook = payload.launch.env_hook  # the scheduler's variables -> env:// (torchrun sets them itself)
    if kind.per_gpu and hook and not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        kinds.resolve(hook)(payload.launch)
    rank = os.environ.get("RANK", "0")
    if os.environ.get("SUBMITIT_EXECUTOR") or not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if rank == "0" else logging.WARNING, stream=sys.stdout,
                            format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s",
                            force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("submitit").propagate = False  # it has a handler of its own: lines once


def _rendezvous() -> str:
    """MASTER_ADDR:MASTER_PORT as this host resolves it (so a log shows which address was used)."""
    import socket

    host, port = os.environ["MASTER_ADDR"], os.environ.get("MASTER_PORT", "?")
    try:
        addr = socket.gethostbyname(host)
    except OSError as exc:
        addr = f"unresolved: {exc}"
    return f"{host}:{port} ({addr}), from {socket.gethostname()}"


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def _install_stop(flag: StopFlag, mode: str) -> dict[int, Any]:
    """``flag``: the body polls the flag and stops cleanly; ``interrupt``: unwind at once.
    Returns the handlers to put back (none off the main thread, where signals cannot be set)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    sigs = (signal.SIGTERM, signal.SIGUSR2)
    if mode == "flag":
        previous = {sig: signal.getsignal(sig) for sig in sigs}
        flag.install()
        return previous
    return {sig: signal.signal(sig, _raise_interrupt) for sig in sigs}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _on_time_limit(job: Job) -> None:
    """The time-limit warning came and the checkpoint is written: rank 0 asks the scheduler to
    run the job again (the launch's hook, e.g. Slurm's requeue); the next attempt resumes."""
    restart = job.payload.launch.restart
    if job.rank == 0 and restart.on_time_limit:
        kinds.resolve(restart.on_time_limit)(restart.max_restarts)


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_jobs.runtime --payload FILE`` or ``--spec SPEC --run-dir DIR [--set k=v]``:
    the launch path for a Kubernetes pod, torchrun or a plain sbatch script. Bad input is one
    line on stderr and exit code 2 (the pod failure policy does not retry it), never a traceback."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="alpaca_jobs.runtime")
    ap.add_argument("--payload", help="a rendered payload (JSON), as the Kubernetes backend mounts it")
    ap.add_argument("--spec", help="a job spec file (with --run-dir)")
    ap.add_argument("--run-dir", help="the run directory (its name is the run id)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--backend", default="torchrun")
    ap.add_argument("--launch", help="the launch description (JSON), as a rendered script passes it")
    args = ap.parse_args(argv)
    try:
        if args.payload:
            from alpaca_jobs.common.textfiles import read_utf8

            payload = Payload.from_dict(json.loads(read_utf8(args.payload)))
        elif args.spec and args.run_dir:
            from alpaca_jobs.spec import load_spec

            run_dir = Path(args.run_dir)
            launch = Launch.from_dict(json.loads(args.launch)) if args.launch else None
            payload = Payload.build(load_spec(args.spec, args.overrides), run_dir.name, args.backend, run_dir,
                                    launch)
        else:
            ap.error("give --payload FILE, or --spec SPEC --run-dir DIR")
        run_job(payload, kinds.resolve(kinds.get(payload.kind).body))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        where = args.run_dir or (str(Path(args.payload).parent) if args.payload else None)
        if where and Path(where).is_dir():
            failures.mark_no_retry(Path(where), str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
