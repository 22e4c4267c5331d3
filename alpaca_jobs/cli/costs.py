"""``alpaca-jobs cost estimate`` and ``alpaca-jobs report``: the click side of ``ops/estimate.py``
(a 7B, 13B or 65B recipe's projected cost, formula shown) and ``ops/report.py`` (GPU-hours and cost per
run, stage and cluster, from the ledger). torch-free; matplotlib only for --png/--html."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.ops.estimate import (
    ALPACA_EXAMPLES,
    ASSUMED_MEAN_TOKENS,
    NODE_BANDWIDTH,
    RECIPES,
    estimate,
    from_record,
    peak_for,
    resolve_sharding,
)
from alpaca_jobs.ops.prices import gpu_price
from alpaca_jobs.ops.report import format_table, load_summary, render_html, render_png
from alpaca_jobs.ops.shapes import LLAMA


@click.command("estimate")
@click.option("--model", type=click.Choice(sorted(RECIPES, key=lambda m: LLAMA[m].params)), default="7b",
              show_default=True, help="LLaMA size (paper table 2); its recipe in jobs/ sets the defaults below")
@click.option("--tokens-per-second", type=float, help="measured throughput of all the GPUs together")
@click.option("--mfu", type=float, help="model FLOPs utilisation (0-1) to assume, as a run without "
              "activation checkpointing reaches it (with it, 4/3 the FLOPs per token are done)")
@click.option("--record", type=click.Path(exists=True, dir_okay=False),
              help="a run.json: its MFU (GPU runs) and mean example length")
@click.option("--nodes", type=int, help="nodes (default: the recipe's: 7b 1, 13b 2, 65b 4)")
@click.option("--gpus", default=8, show_default=True, help="GPUs per node")
@click.option("--gpu-type", default="a100-80gb", show_default=True)
@click.option("--gpu-hour-usd", type=float, help="price override")
@click.option("--sharding", type=click.Choice(["auto", "hybrid", "full"]),
              help="FSDP sharding across nodes (default: the recipe's layout; auto: hybrid on more than one node)")
@click.option("--node-bandwidth", type=float, default=NODE_BANDWIDTH / 1e9, show_default=True,
              help="inter-node bandwidth per node, GB/s (assumed: 8 x 200 Gb/s HDR InfiniBand, a DGX A100's; "
              "AWS p4de: 50)")
@click.option("--recompute/--no-recompute", default=None,
              help="activation checkpointing (default: the recipe's layout: on for 13b and 65b)")
@click.option("--epochs", type=int, help="default: the recipe's (7b 3, 13b 5, 65b 3)")
@click.option("--examples", default=ALPACA_EXAMPLES, show_default=True)
@click.option("--mean-tokens", type=float, help=f"tokens per example (default: from --record, else {ASSUMED_MEAN_TOKENS})")
@click.option("--target-usd", default=100.0, show_default=True)
def estimate_command(model, tokens_per_second, mfu, record, nodes, gpus, gpu_type, gpu_hour_usd, sharding,
                     node_bandwidth, recompute, epochs, examples, mean_tokens, target_usd) -> None:
    """Project the cost of a recipe (default: the 7B's, 3 epochs of 52K examples on 8x A100-80GB)."""
    note = ""
    recipe = RECIPES[model]
    nodes = recipe.nodes if nodes is None else nodes
    epochs = recipe.epochs if epochs is None else epochs
    recompute = recipe.recompute if recompute is None else recompute
    sharding = resolve_sharding(sharding or recipe.sharding, nodes)
    if mfu is not None and not 0 < mfu <= 1:
        raise UserError(f"--mfu {mfu}: a model FLOPs utilisation is a fraction in (0, 1], e.g. 0.45")
    if gpus < 1:
        raise UserError(f"--gpus {gpus}: give at least one GPU")
    if nodes < 1:
        raise UserError(f"--nodes {nodes}: give at least one node")
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: give at least one epoch")
    if node_bandwidth <= 0:
        raise UserError(f"--node-bandwidth {node_bandwidth}: give the GB/s each node sends across nodes, e.g. 200")
    peak = peak_for(gpu_type)
    if record:
        mean_tokens, mfu, note = from_record(record, gpu_type, mean_tokens, mfu, tokens_per_second)
    if mean_tokens is None:
        mean_tokens = ASSUMED_MEAN_TOKENS
        click.echo(f"mean tokens per example: {mean_tokens} (assumed; pass --mean-tokens or --record)")
    p = gpu_price(gpu_type, gpu_hour_usd)
    est = estimate(gpus=gpus * nodes, price=p.usd_per_gpu_hour, epochs=epochs, examples=examples,
                   mean_tokens=mean_tokens, tokens_per_second=tokens_per_second, mfu=mfu, peak=peak,
                   model=model, nodes=nodes, sharding=sharding, node_bandwidth=node_bandwidth * 1e9,
                   global_batch=recipe.global_batch, recompute=recompute)
    size = model.upper()
    if nodes == 1:
        click.echo(f"{size} Alpaca recipe on {gpus}x {gpu_type}")
    else:
        click.echo(f"{size} Alpaca recipe on {nodes} nodes x {gpus}x {gpu_type} ({nodes * gpus} GPUs), "
                   f"{sharding} shard" + (", activation checkpointing" if recompute else ""))
    if note:
        click.echo("  " + note)
    for line in est.lines:
        click.echo("  " + line)
    click.echo(f"  price: {p.source}")
    verdict = "MET" if est.cost_usd <= target_usd else "MISSED"
    click.echo(f"target ${target_usd:.2f}: {verdict}")


@click.command("report")
@click.option("--ledger", type=click.Path(dir_okay=False),
              help="the ledger file (default: env ALPACA_JOBS_LEDGER, else <runs dir>/ledger.sqlite3)")
@click.option("--runs-dir", help="where runs live (env ALPACA_JOBS_RUNS_DIR; default ./runs)")
@click.option("--scan", type=click.Path(file_okay=False),
              help="first import DIR/*/run.json into the ledger (runs from before it existed)")
@click.option("--png", type=click.Path(dir_okay=False), help="write the chart here")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="write a self-contained HTML page here")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="write the numbers as JSON here ('-': stdout, instead of the table)")
def report_command(ledger, runs_dir, scan, png, html_path, json_path) -> None:
    """GPU-hours and cost per run, stage and cluster, training against the $100 target."""
    s, path, imported = load_summary(ledger, runs_dir, scan)
    if imported is not None:
        click.echo(f"imported {imported} run record(s) from {scan} into {path}", err=True)
    if json_path == "-":
        click.echo(json.dumps(s.as_dict(), indent=1))
    else:
        click.echo(format_table(s))
        if json_path:
            Path(json_path).write_text(json.dumps(s.as_dict(), indent=1) + "\n")
    if png or html_path:
        image = render_png(s)
        if png:
            Path(png).write_bytes(image)
        if html_path:
            Path(html_path).write_text(render_html(s, image))
