"""The evaluate kind's body (a submitit task, a Kubernetes container, or in-process from
``alpaca-jobs evaluate``). Collects both systems' outputs, has the LLM judge (if any) compare every pair in both orders,
folds in people's ratings (if any), and writes the report and the run record. Every output and
judgment is on disk the moment it arrives; running again on the same run dir asks only for
what is missing, so a crash or a cancel costs no repeated paid requests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alpaca_jobs.evaluate import rundir

log = logging.getLogger(__name__)


def evaluate_body(job) -> Any:
    from alpaca_jobs.evaluate.report import headline
    from alpaca_jobs.job import Outcome

    log.info("evaluate: %s", job.spec.evaluate.model_dump_json())
    spends: dict[str, Any] = {}
    try:
        report = run(job.spec.evaluate, job.run_dir, spends)
    except BaseException:
        job.partial["api"] = rundir.save_usage(job.run_dir, job.meter.attempt, spends)
        raise
    api = rundir.save_usage(job.run_dir, job.meter.attempt, spends)
    return Outcome("completed", {"api": api, "results": headline(report)})


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


def preflight(loaded, visible=lambda _: True) -> None:
    """Checks before submission, on what this machine can see: the instruction set parses, the
    judge prompt has its placeholders, model directories exist."""
    from alpaca_jobs.common.presets import check_base_model
    from alpaca_jobs.evaluate.collect import DEFAULT_MODEL
    from alpaca_jobs.evaluate.instructions import load_items
    from alpaca_jobs.evaluate.judge import load_prompt
    from alpaca_jobs.model_dirs import resolve_model

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
