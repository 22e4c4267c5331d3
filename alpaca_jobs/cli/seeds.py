"""``alpaca-jobs seeds check SEEDS --against OTHER.jsonl``: the most similar seed pairs by the
generator's own ROUGE-L rule (``generate/check.py``); exits 1 when any reaches the threshold."""

from __future__ import annotations

import sys

import click


@click.group()
def seeds() -> None:
    """Seed task files (self-instruct JSONL)."""


@seeds.command("check")
@click.argument("seeds_file", metavar="SEEDS", type=click.Path(dir_okay=False))
@click.option("--against", required=True, type=click.Path(dir_okay=False), metavar="OTHER.jsonl",
              help="seed tasks to compare with, e.g. self-instruct's data/seed_tasks.jsonl")
@click.option("--threshold", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="fail when a pair scores this or more (the generator's rouge_threshold)")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="pairs to print")
def check_command(seeds_file: str, against: str, threshold: float, top: int) -> None:
    """Print the most similar (ROUGE-L) pairs between SEEDS and --against; exit 1 if any
    pair reaches --threshold."""
    from alpaca_jobs.generate.check import worst_pairs

    pairs = worst_pairs(seeds_file, against)
    bad = [p for p in pairs if p.score >= threshold]
    for p in pairs[:max(top, len(bad))]:
        mark = "TOO SIMILAR" if p.score >= threshold else "ok"
        click.echo(f"{p.score:.3f} {mark}\n  {p.seed_where}: {p.seed}\n  {p.other_where}: {p.other}")
    worst = pairs[0].score if pairs else 0.0
    click.echo(f"{len(pairs)} seed tasks; max ROUGE-L {worst:.3f}; {len(bad)} at or above {threshold}")
    if bad:
        sys.exit(1)
