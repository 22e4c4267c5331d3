"""What ``alpaca-jobs seeds check SEEDS --against OTHER.jsonl`` (``cli/seeds.py``) asks: is every seed task novel by the
generator's own rule? The generate job rejects an instruction whose ROUGE-L F-measure against
any pooled one (seeds included) exceeds ``generate.rouge_threshold`` (0.7), so a seed set
meant to sit beside another one (e.g. the upstream self-instruct seeds, which the user
supplies: this project does not ship them) should stay below it. Prints the worst pairs and
exits 1 when any pair scores >= the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
