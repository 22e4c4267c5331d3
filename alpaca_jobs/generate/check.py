"""``alpaca-jobs seeds check SEEDS --against OTHER.jsonl``: is every seed task novel by the
generator's own rule? The generate job rejects an instruction whose ROUGE-L F-measure against
any pooled one (seeds included) exceeds ``generate.rouge_threshold`` (0.7), so a seed set
meant to sit beside another one (e.g. the upstream self-instruct seeds, which the user
supplies: this project does not ship them) should stay below it. Prints the worst pairs and
exits 1 when any pair scores >= the threshold.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click


@dataclass(frozen=True)
class Pair:
    score: float
    seed_where: str
    seed: str
    other_where: str
    other: str


def worst_pairs(seeds: str | Path, against: str | Path) -> list[Pair]:
    """For each task of ``seeds``, its most similar instruction in ``against``; worst first."""
    from alpaca_jobs.generate.rouge import Deduper
    from alpaca_jobs.generate.seeds import load_seeds

    ours, theirs = load_seeds(seeds), load_seeds(against)
    pool = Deduper()
    for task in theirs:
        pool.add(task.instruction)
    pairs = []
    for task in ours:
        scores = pool.scores(task.instruction)
        best = int(scores.argmax())
        pairs.append(Pair(float(scores[best]), task.where, task.instruction, theirs[best].where,
                          theirs[best].instruction))
    return sorted(pairs, key=lambda p: -p.score)


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
    pairs = worst_pairs(seeds_file, against)
    bad = [p for p in pairs if p.score >= threshold]
    for p in pairs[:max(top, len(bad))]:
        mark = "TOO SIMILAR" if p.score >= threshold else "ok"
        click.echo(f"{p.score:.3f} {mark}\n  {p.seed_where}: {p.seed}\n  {p.other_where}: {p.other}")
    worst = pairs[0].score if pairs else 0.0
    click.echo(f"{len(pairs)} seed tasks; max ROUGE-L {worst:.3f}; {len(bad)} at or above {threshold}")
    if bad:
        sys.exit(1)
