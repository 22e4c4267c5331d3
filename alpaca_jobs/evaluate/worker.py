"""Entry point of the evaluate job (a submitit task, a Kubernetes container, or in-process from
``alpaca-jobs evaluate``):

    python -m alpaca_jobs.evaluate.worker --payload payload.json

Collects both systems' outputs, has the LLM judge (if any) compare every pair in both orders,
folds in people's ratings (if any), and writes the report and the run record. Every output and
judgment is on disk the moment it arrives; running again on the same run dir asks only for
what is missing, so a crash or a cancel costs no repeated paid requests.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.evaluate import rundir

log = logging.getLogger(__name__)


def evaluate_job(payload: dict[str, Any]) -> dict[str, Any]:
    from alpaca_jobs.spec import LoadedSpec

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    attempt = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    loaded = LoadedSpec.from_payload(payload)
    run_dir = Path(payload["run_dir"])
    log.info("evaluate: %s", loaded.spec.evaluate.model_dump_json())
    spends: dict[str, Any] = {}
    previous = _exit_on_stop_signals()
    try:
        report = run(loaded.spec.evaluate, run_dir, spends)
    except BaseException as exc:
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit))
        _record(payload, loaded, run_dir, t0, started, attempt, spends,
                "interrupted" if stopped else "failed", {},
                error=str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _restore(previous)
    from alpaca_jobs.evaluate.report import headline

    return _record(payload, loaded, run_dir, t0, started, attempt, spends, "completed", headline(report))


def _exit_on_stop_signals() -> dict:
    """A cancel or preemption (SIGTERM) or Slurm's time-limit warning (SIGUSR2) unwinds like
    Ctrl-C: served models stop, the record says interrupted, and what was fetched stays on disk
    for the next attempt (nothing here is worth finishing first, unlike a training step)."""
    import signal
    import threading

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGUSR2)}


def _restore(previous: dict) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run(cfg, run_dir: Path, spends: dict[str, Any]) -> dict[str, Any]:
    """The evaluation itself; ``spends`` gets each API client's running Spend as it starts."""
    from alpaca_jobs.api import Client
    from alpaca_jobs.evaluate import collect, judge
    from alpaca_jobs.evaluate.instructions import load_items

    items = load_items(cfg.instructions, cfg.max_instructions)
    template = judge.load_prompt(cfg.judge_prompt_file) if cfg.judge else None
    rundir.pin(run_dir, cfg, items)
    names = (cfg.system_a.name, cfg.system_b.name)
    outputs = collect.read_outputs(run_dir / rundir.OUTPUTS)
    need = [s for s in (cfg.system_a, cfg.system_b) if collect.missing(items, s.name, outputs)]
    log.info("%d items; outputs to fetch: %s", len(items),
             {s.name: len(collect.missing(items, s.name, outputs)) for s in need} or "none")
    role = {cfg.system_a.name: "system_a", cfg.system_b.name: "system_b"}
    for group in collect.phases(need) if need else []:
        with collect.endpoints(group, cfg.max_new_tokens, run_dir / "served") as eps:
            clients = {name: Client(ep) for name, ep in eps.items()}
            spends.update({role[name]: c.spend for name, c in clients.items()})
            outputs = collect.collect(items, clients, run_dir / rundir.OUTPUTS, cfg.max_new_tokens, cfg.seed)
    judgments = judge.read_judgments(run_dir / rundir.JUDGMENTS)
    if cfg.judge and judge.pending(items, outputs, names, judgments):
        client = Client(cfg.judge)
        spends["judge"] = client.spend
        judgments = judge.judge_all(items, outputs, names, client, template,
                                    run_dir / rundir.JUDGMENTS, cfg.seed)
    return write_report(rundir.Run(run_dir, cfg, items), outputs, judgments)


def write_report(run: rundir.Run, outputs: dict | None = None, judgments: list | None = None) -> dict:
    """Build and write report.json/png/html from what the run dir holds (+ people's ratings)."""
    from alpaca_jobs.evaluate import collect, judge, report
    from alpaca_jobs.evaluate.ratings import Ratings

    if outputs is None:
        outputs = collect.read_outputs(run.run_dir / rundir.OUTPUTS)
    if judgments is None:
        judgments = judge.read_judgments(run.run_dir / rundir.JUDGMENTS)
    humans: dict[str, dict[str, str]] = {}
    if run.ratings_path.is_file():
        store = Ratings(run.ratings_path)
        humans = store.preferences()
        store.close()
    judge_model = run.cfg.judge.model if run.cfg.judge else None
    rep = report.build(run.items, outputs, run.names, judgments, humans, run.cfg.bootstrap_samples,
                       run.cfg.seed, judge_model)
    paths = report.write(rep, run.items, outputs, run.run_dir)
    log.info("report: %s", ", ".join(str(p) for p in paths))
    return rep


def _record(payload, loaded, run_dir: Path, t0: float, started: str, attempt: str, spends: dict,
            status: str, results: dict, error: str | None = None) -> dict[str, Any]:
    from alpaca_jobs.ops.records import build_record, own_usage, publish

    api = rundir.save_usage(run_dir, attempt, spends)
    rec = build_record(payload, loaded, status, own_usage(t0), started, api=api, results=results,
                       error=error)
    return publish(rec, run_dir)


def preflight(loaded, visible=lambda _: True) -> None:
    """Checks before submission, on what this machine can see: the instruction set parses, the
    judge prompt has its placeholders, model directories exist."""
    from alpaca_jobs.common.presets import check_base_model
    from alpaca_jobs.evaluate.collect import DEFAULT_MODEL
    from alpaca_jobs.evaluate.instructions import load_items
    from alpaca_jobs.evaluate.judge import load_prompt
    from alpaca_jobs.serve.server import resolve_model

    cfg = loaded.spec.evaluate
    if visible(cfg.instructions):
        load_items(cfg.instructions, cfg.max_instructions)
    if cfg.judge_prompt_file and visible(cfg.judge_prompt_file):
        load_prompt(cfg.judge_prompt_file)
    for system in (cfg.system_a, cfg.system_b):
        d = system.model_dir
        if d is None or d == DEFAULT_MODEL:
            continue
        if d.startswith("preset:"):
            check_base_model(d)
        elif visible(d):
            resolve_model(d)


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_jobs.evaluate.worker --payload FILE`` (Kubernetes, plain sbatch)."""
    from alpaca_jobs.kinds import payload_main

    return payload_main("evaluate", argv)


if __name__ == "__main__":
    sys.exit(main())
