"""``alpaca-jobs``: submit jobs, follow them, and read what they cost.

Kept light: no torch, transformers or kubernetes import on the way to ``--help``, ``submit``
or ``status``; backends and jobs import what they need when they run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from alpaca_jobs.backends import CLUSTERS, RENDERS_PLAIN
from alpaca_jobs.cli.here import load_kind, over_budget_option, run_here
from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.presets import PRESETS


class _Group(click.Group):
    """Print UserErrors as one line on stderr (exit 2), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alpaca-jobs")
def main() -> None:
    """Run the Alpaca recipe (generate, train, serve, evaluate) locally, on Slurm or on Kubernetes."""


def _check_run_id(_ctx, _param, value: str | None) -> str | None:
    """--run-id becomes a directory name: never a path (see backends.base.check_run_id)."""
    from alpaca_jobs.backends.base import check_run_id

    return None if value is None else check_run_id(value)


def _cluster_option(f):
    return click.option(
        "-c", "--cluster", default=lambda: os.environ.get("CLUSTER", "local"), show_default="local",
        type=click.Choice(CLUSTERS), help="where to run (env CLUSTER)",
    )(f)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@_cluster_option
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="override one spec field, e.g. --set train.epochs=1 (repeatable)")
@click.option("--sweep", metavar="FIELD=V1,V2,...",
              help="one run per value, submitted together (a Slurm job array)")
@click.option("--dry-run", is_flag=True, help="print exactly what would be submitted; submit nothing")
@click.option("--run-id", callback=_check_run_id, help="reuse a run id: resumes from its last checkpoint")
@click.option("--wait/--no-wait", default=None, help="follow the job to the end (default: local only)")
@click.option("--over-budget", is_flag=True, help="submit even if the estimate exceeds cost.max_usd")
def submit(spec: str, cluster: str, overrides: tuple[str, ...], sweep: str | None, dry_run: bool,
           run_id: str | None, wait: bool | None, over_budget: bool) -> None:
    """Validate SPEC, then submit it (or print it with --dry-run)."""
    from alpaca_jobs import submission
    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.backends.base import new_run_id
    from alpaca_jobs.spec import load_spec

    variants = _sweep(overrides, sweep)
    specs = [load_spec(spec, v) for v in variants]  # every variant valid before any is sent
    backend = get_backend(cluster)
    base_id = run_id or new_run_id(specs[0].spec.name)
    ids = [base_id] if len(specs) == 1 else [f"{base_id}-{i}" for i in range(len(specs))]
    runs = [submission.Run(loaded, rid) for loaded, rid in zip(specs, ids, strict=True)]
    planned = submission.plan(backend, runs, submission.Options(dry_run=dry_run, over_budget=over_budget))
    for p in planned:  # dry run: on stderr, as stdout is exactly the submission
        for line in ([f"{p.run.run_id}:"] if len(runs) > 1 else []) + p.forecast.lines():
            click.echo(line, err=dry_run)
    if dry_run:
        shown = spec.replace("\r", "\\r").replace("\n", "\\n")  # the comment stays one line
        click.echo(f"# dry run: {cluster} submission of {shown} (nothing submitted)")
        for p, v in zip(planned, variants, strict=True):
            if len(runs) > 1:
                click.echo(f"# --- {p.run.run_id}: {' '.join(v[len(overrides):])}")
            click.echo(p.submission.text, nl=False)
        return
    handles = submission.send(backend, planned)
    for handle, p in zip(handles, planned, strict=True):
        click.echo(f"submitted {handle.run_id} to {cluster} (job {handle.job_id})"
                   + ("; resuming from its last checkpoint" if p.resuming else ""))
        click.echo(f"  run dir: {handle.run_dir}")
    runs_dir = Path(handles[0].run_dir).parent
    click.echo(f"  follow:  alpaca-jobs status|logs|cancel {handles[0].run_id} --runs-dir {runs_dir}")
    from alpaca_jobs.common import kinds

    if kinds.get(specs[0].spec.job).long_running and wait is None:
        wait = False  # a server runs until cancelled: do not block on it by default
    if len(handles) == 1 and (wait if wait is not None else backend.capabilities.attached):
        _follow(backend, handles[0])


def _sweep(overrides: tuple[str, ...], sweep: str | None) -> list[list[str]]:
    if not sweep:
        return [list(overrides)]
    field, sep, values = sweep.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not field or len(items) < 2:
        raise UserError(f"--sweep {sweep!r}: use FIELD=V1,V2[,...] with at least two values")
    return [[*overrides, f"{field}={v}"] for v in items]


def _follow(backend, handle) -> None:
    """Follow rank 0's log until the job ends, then print the run report."""
    from alpaca_jobs.cli.follow import Follower
    from alpaca_jobs.cli.runs import follow_logs
    from alpaca_jobs.ops.present import format_report
    from alpaca_jobs.ops.record import load_record

    screen = Follower(Path(handle.run_dir))  # on a terminal: a progress bar under the log

    def show(text: str, nl: bool = True) -> None:
        screen.feed(text + ("\n" if nl else ""))

    try:
        state = follow_logs(backend, handle, 0, follow=True, echo=show, on_poll=lambda: screen.feed(""))
    except KeyboardInterrupt:
        screen.close()
        click.echo(f"\nstopped following; the job goes on. Cancel: alpaca-jobs cancel {handle.run_id}")
        return
    screen.close()
    backend.finalize(handle)
    rec = load_record(Path(handle.run_dir))
    click.echo("")
    if rec:
        click.echo(format_report(rec))
    if state != "COMPLETED":
        raise UserError(f"run {handle.run_id} ended {state}" + (f": {rec.error}" if rec and rec.error else ""))


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("-c", "--cluster", type=click.Choice(RENDERS_PLAIN), default=RENDERS_PLAIN[0], show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write here instead of stdout")
def render(spec_path: str, cluster: str, output: str | None) -> None:
    """Render SPEC for plain cluster tools: an sbatch script, or manifests for kubectl -k."""
    from alpaca_jobs.backends import get_backend
    from alpaca_jobs.spec import load_spec

    text = get_backend(cluster).render_plain(load_spec(spec_path), spec_path)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


@main.group()
def spec() -> None:
    """Job specs."""


@spec.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE")
def spec_check(path: str, overrides: tuple[str, ...]) -> None:
    """Validate a spec and print it resolved (defaults filled in, layout included)."""
    import yaml

    from alpaca_jobs.spec import load_spec

    loaded = load_spec(path, overrides)
    out = {**loaded.spec.model_dump(mode="json"), "layout_resolved": loaded.layout.model_dump(mode="json"),
           "derived": loaded.derived()}
    click.echo(yaml.safe_dump(out, sort_keys=False), nl=False)


@main.group()
def cost() -> None:
    """What runs cost."""


from alpaca_jobs.cli.costs import estimate_command, report_command  # noqa: E402 - torch-free

cost.add_command(estimate_command)

main.add_command(report_command)  # alpaca-jobs report

from alpaca_jobs.cli.runs import cancel, list_runs, logs, status  # noqa: E402 - click only

main.add_command(list_runs)
main.add_command(status)
main.add_command(logs)
main.add_command(cancel)

from alpaca_jobs.cli.evaluate import evaluate_command, rate_command  # noqa: E402 - click only
from alpaca_jobs.cli.evaluate import report_command as evaluate_report_command  # noqa: E402

main.add_command(evaluate_command)  # alpaca-jobs evaluate [SPEC] [--set ...] [--run-dir DIR]
main.add_command(rate_command)  # alpaca-jobs rate RUN_DIR [--host] [--port 8090]
main.add_command(evaluate_report_command)  # alpaca-jobs evaluate-report RUN_DIR

from alpaca_jobs.cli.seeds import seeds as seeds_group  # noqa: E402 - click only

main.add_command(seeds_group)  # alpaca-jobs seeds check SEEDS --against OTHER.jsonl


@main.group()
def models() -> None:
    """Base-model presets (built once into the cache; no hub needed)."""


@models.command("prepare")
@click.argument("preset", type=click.Choice(PRESETS))
@click.option("--data", default="seeds/seed_tasks.jsonl", show_default=True,
              help="corpus for tiny-llama's tokenizer")
def models_prepare(preset: str, data: str) -> None:
    """Build PRESET into the cache and print its directory."""
    from alpaca_jobs.model_dirs import resolve_base_model

    click.echo(resolve_base_model(f"preset:{preset}", data))


# ServeConfig's own defaults, but on loopback: a server started by hand is not for the network
SERVE_DEFAULTS = {"job": "serve", "name": "serve", "serve": {"host": "127.0.0.1"}}


@main.command()
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="override a spec field (serve.*)")
@click.option("--model", help="shorthand for --set serve.model=DIR (a run's model/)")
@click.option("--host", help="shorthand for --set serve.host=HOST")
@click.option("--port", type=click.IntRange(1, 65535), help="shorthand for --set serve.port=PORT")
@click.option("--watermark-key-file", help="file holding the watermark key (or env ALPACA_JOBS_WATERMARK_KEY)")
@click.option("--api-key-file", help="file of API keys, one per line (or env ALPACA_JOBS_API_KEYS)")
def serve(spec_path: str | None, overrides: tuple[str, ...], model: str | None, host: str | None,
          port: int | None, watermark_key_file: str | None, api_key_file: str | None) -> None:
    """Serve a model here: OpenAI-compatible API and web demo (watermark on, moderation, flags).
    Settings are a serve spec's (default: the serve section's defaults) plus --set overrides;
    secrets come from files or the environment, never from the spec."""
    import logging

    import uvicorn

    from alpaca_jobs.serve.app import create_app
    from alpaca_jobs.serve.server import build_state
    from alpaca_jobs.spec import builtin_spec, load_spec

    sets = [*overrides, *(f"serve.{k}={v}" for k, v in (("model", model), ("host", host), ("port", port))
                          if v is not None)]
    loaded = load_spec(spec_path, sets) if spec_path else builtin_spec(SERVE_DEFAULTS, sets, "serve defaults")
    if loaded.spec.job != "serve":
        raise UserError(f"{spec_path}: job is {loaded.spec.job!r}; `alpaca-jobs serve` runs serve specs")
    cfg = loaded.spec.serve
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = build_state(cfg, watermark_key_file, api_key_file)
    click.echo(f"serving {state.engine.name} on http://{cfg.host}:{cfg.port} "
               f"({'API keys required' if state.api_keys else 'no API keys configured'})")
    uvicorn.run(create_app(state), host=cfg.host, port=cfg.port, log_level="info", access_log=False)


@main.command()
@click.argument("spec_path", metavar="SPEC", default="jobs/generate-local.yaml",
                type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="override one spec field, e.g. --set generate.num_instructions=50")
@click.option("--run-id", callback=_check_run_id, help="reuse a run id: resumes from its raw-response log")
@over_budget_option
def generate(spec_path: str, overrides: tuple[str, ...], run_id: str | None, over_budget: bool) -> None:
    """Generate self-instruct training data here (SPEC default: jobs/generate-local.yaml)."""
    from alpaca_jobs.backends.base import new_run_id
    from alpaca_jobs.ops.present import format_report

    loaded = load_kind(spec_path, overrides, "generate")
    rid = run_id or new_run_id(loaded.spec.name)
    rec = run_here(loaded, (Path(loaded.spec.runs_dir) / rid).resolve(), over_budget)
    click.echo(format_report(rec))


@main.command()
@click.argument("spec_path", metavar="PIPELINE", default="jobs/pipeline-local.yaml",
                type=click.Path(dir_okay=False))
@_cluster_option
@click.option("--run-id", callback=_check_run_id, help="a pipeline id to resume: completed stages are reused")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="follow to the end (Slurm: --no-wait submits the dependent jobs and returns)")
@click.option("--keep-serving/--stop-serving", default=None,
              help="leave the serve stage running at the end (default: only on clusters)")
@click.option("--over-budget", is_flag=True, help="start stages even if their estimate exceeds cost.max_usd")
def pipeline(spec_path: str, cluster: str, run_id: str | None, wait: bool, keep_serving: bool | None,
             over_budget: bool) -> None:
    """Run the whole recipe: generate -> train -> serve -> evaluate, and print one summary."""
    import json

    from alpaca_jobs.cli.follow import Follower
    from alpaca_jobs.pipeline.run import run_pipeline
    from alpaca_jobs.pipeline.summary import collect, format_summary

    pipe = run_pipeline(spec_path, cluster, run_id, wait, echo=click.echo, keep_serving=keep_serving,
                        screen=Follower, over_budget=over_budget)
    summary = collect(pipe.dir)
    (pipe.dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    click.echo("")
    click.echo(format_summary(summary))
    click.echo(f"\nfiles: {pipe.dir}/summary.json; status: alpaca-jobs status {pipe.id}")


@main.group()
def watermark() -> None:
    """The serve job's watermark."""


@watermark.command("detect")
@click.argument("file", type=click.File("r"), default="-")
@click.option("--model", help="the served model's directory (its tokenizer); default: SmolLM2")
@click.option("--gamma", type=float, help="green-list fraction (default: the serve spec's)")
@click.option("--z-threshold", type=float, help="z-score from which text counts as watermarked (default: the serve spec's)")
@click.option("--key-file", help="the watermark key (or env ALPACA_JOBS_WATERMARK_KEY)")
def watermark_detect(file, model, gamma, z_threshold, key_file) -> None:
    """Is FILE (or stdin) watermarked? Prints z-score, p-value and verdict as JSON."""
    import json

    from transformers import AutoTokenizer

    from alpaca_jobs.model_dirs import resolve_model
    from alpaca_jobs.serve.server import watermark_key
    from alpaca_jobs.serve.watermark import WatermarkConfig, detect_text

    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    key, _ = watermark_key(key_file)
    text = file.read()
    if not text.strip():
        raise UserError("no text to check: give a file or pipe text on stdin")
    vocab = cfg.get("vocab_size") or len(tok)
    from alpaca_jobs.serve.config import ServeConfig

    serve_cfg = ServeConfig()  # the server's own settings unless given here
    wm = WatermarkConfig(key=key, gamma=serve_cfg.watermark_gamma if gamma is None else gamma,
                         z_threshold=serve_cfg.watermark_z_threshold if z_threshold is None else z_threshold)
    click.echo(json.dumps(detect_text(text, tok, wm, vocab).as_dict()))


@main.group()
def flags() -> None:
    """Outputs users flagged in the web demo."""


@flags.command("export")
@click.option("--flags-db", default="runs/flags.sqlite3", show_default=True)
@click.option("-o", "--output", type=click.File("w"), default="-")
def flags_export(flags_db, output) -> None:
    """Write every flag as JSON lines (prompt, output, model, parameters, reason, time)."""
    import json
    import sqlite3

    from alpaca_jobs.serve.flags import FlagStore

    if not Path(flags_db).is_file():
        raise UserError(f"--flags-db {flags_db}: no such database (has the server run with it?)")
    try:
        rows = FlagStore(Path(flags_db)).all()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"--flags-db {flags_db}: not a flags database ({exc}); give the SQLite "
                        "file the serve job writes (serve.flags_db)") from None
    for row in rows:
        output.write(json.dumps(row) + "\n")
