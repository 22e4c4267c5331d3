"""The numbers of a pairwise comparison, from system_a's side.

Verdicts per item are "a" (system_a preferred), "b", "tie" or "invalid" (left out of rates).
Win rate = (wins + ties / 2) / judged items, with a percentile bootstrap 95% interval over items
(seeded: the same verdicts always give the same interval). Agreement between two judges is
counted on the items both judged: percent agreement and Cohen's kappa over {a, b, tie}.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

import numpy as np

CATEGORIES = ("a", "b", "tie")
_SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}


def summary(verdicts: dict[str, str], samples: int, seed: int) -> dict[str, Any]:
    """Wins/ties/losses, win rate and its bootstrap 95% interval."""
    counts = Counter(verdicts.values())
    scores = np.array([_SCORE[v] for v in verdicts.values() if v in _SCORE])
    out: dict[str, Any] = {"wins": counts["a"], "ties": counts["tie"], "losses": counts["b"],
                           "invalid": counts["invalid"], "judged": int(scores.size),
                           "win_rate": None, "ci95": None}
    if scores.size:
        out["win_rate"] = round(float(scores.mean()), 4)
        out["ci95"] = [round(x, 4) for x in bootstrap_ci(scores, samples, seed)]
    return out


def bootstrap_ci(scores: np.ndarray, samples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``scores`` resampled with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, scores.size, size=(samples, scores.size))
    means = scores[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def agreement(x: dict[str, str], y: dict[str, str]) -> dict[str, Any]:
    """Percent agreement and Cohen's kappa on the items both judges judged (invalid excluded).
    Kappa is None when chance agreement is already 1 (both always gave the same one answer)."""
    shared = [k for k in x if k in y and x[k] in CATEGORIES and y[k] in CATEGORIES]
    n = len(shared)
    if not n:
        return {"items": 0, "percent": None, "kappa": None}
    observed = sum(x[k] == y[k] for k in shared) / n
    cx, cy = Counter(x[k] for k in shared), Counter(y[k] for k in shared)
    chance = sum(cx[c] * cy[c] for c in CATEGORIES) / (n * n)
    kappa = None if chance >= 1 else (observed - chance) / (1 - chance)
    return {"items": n, "percent": round(100 * observed, 2),
            "kappa": None if kappa is None else round(kappa, 4)}


def majority(ratings: dict[str, dict[str, str]]) -> dict[str, str]:
    """Per item, the verdict most raters gave; no single most common answer -> tie."""
    per_item: dict[str, list[str]] = {}
    for by_item in ratings.values():
        for item, v in by_item.items():
            per_item.setdefault(item, []).append(v)
    out = {}
    for item, votes in per_item.items():
        top = Counter(votes).most_common()
        out[item] = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "tie"
    return out


def lengths(texts: list[str], tokens: list[int]) -> dict[str, Any]:
    """Output lengths of one system: words, characters and (as the server counted) tokens."""
    if not texts:
        return {"outputs": 0}
    words = [len(t.split()) for t in texts]
    chars = [len(t) for t in texts]
    return {"outputs": len(texts), "mean_words": round(statistics.fmean(words), 2),
            "median_words": statistics.median(words), "min_words": min(words), "max_words": max(words),
            "mean_chars": round(statistics.fmean(chars), 2), "mean_tokens": round(statistics.fmean(tokens), 2),
            "empty": sum(1 for t in texts if not t.strip())}
