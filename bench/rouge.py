"""ROUGE-L near-duplicate filter: ours (alpaca_jobs.generate.rouge.Deduper) vs the
straightforward rouge-score loop, on synthetic, near-duplicate-rich instruction sets.

    python bench/rouge.py            # ratio at 500/1,000/2,000, parity on 10,000, ours on 52,000
    python bench/rouge.py --quick    # ratio at 500/1,000, parity on 2,000, ours on 10,000

The straightforward loop is Stanford Alpaca's: every candidate is tokenized once by
rouge-score's tokenizer and scored with ``rouge_scorer._score_lcs`` against every kept
instruction (pre-tokenized, as upstream keeps them; that is faster than calling
``RougeScorer.score`` on the two texts, which re-tokenizes both every time). One process:
upstream spreads the pairs over a multiprocessing pool, worth at most 2x on 2 cores. Max >
threshold rejects; kept ones get ``most_similar`` (``np.argsort(scores, kind="stable")
[-10:][::-1]``, see alpaca_jobs/generate/rouge.py on ties) and ``np.mean(scores)``. Both sides
see the same texts in the same order, timed best of ``--repeat`` runs; every record (decision,
max, top-10 dict in order, mean) must be bit-identical.

The parity run on the larger set cannot afford rouge-score on every pair, so ours and a pruned
rouge-score reference run in lock step: the reference skips exactly the pairs that provably
cannot exceed the threshold, ``2 * overlap / (m + n) <= threshold - 1e-9`` with ``overlap``
the multiset intersection of the two token lists (>= the LCS; counted by its own index, not
our code), and decides each candidate from rouge-score on all other pairs. Our decision must be
the same, our score bit-identical on every pair rouge-score scored, and below the threshold
(and <= the bound) on every skipped one. Every 25th candidate is also scored by rouge-score
against the whole pool: all scores, max, top-10 and mean bit-identical.

Synthetic data (deterministic seed): instruction-like sentences of function words and
Zipf-distributed content words, lengths log-normal (median 12 words, mostly 4-40, 0.5% of
60-150 words), with punctuation, case and a few non-ASCII characters; 45% are edits of an
earlier sentence (word swaps, insertions, deletions, substitutions of 1-60% of the words) or
exact / case-only copies. Exit status 1 if any decision or score differs.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpaca_jobs.generate.rouge import Deduper, tokenize  # noqa: E402

_words = str.split
FUNCTION = _words(
    "the a an of to and in for on with that this is are be as by from at or it your you "
    "into about its their which what how when given following each all more than not can "
    "using between"
)
VERBS = _words(
    "Write Generate Explain Describe Create List Give Classify Rewrite Summarize Find Suggest "
    "Identify Translate Compose Compare Convert Design Edit Name Provide Make Tell Predict "
    "Analyze Construct Brainstorm Determine Calculate Outline"
)
SYLLABLES = _words(
    "ba be bi bo bu ca co cu da de di do fa fe fi ga go ha he hi ka ke ki la le li lo lu ma me "
    "mi mo na ne ni no pa pe pi po ra re ri ro sa se si so ta te ti to va ve vi wa we ya zo "
    "str pl tr gr ch sh th"
)
EXTRA = ["café", "naïve", "résumé", "2023", "COVID-19", "e-mail", "100%", "U.S.", "“quoted”"]


def synthetic(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    content = sorted(
        {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(30000)}
    )
    rng.shuffle(content)
    weights = [1.0 / (i + 1) ** 1.05 for i in range(len(content))]
    cum = np.cumsum(weights)
    cum /= cum[-1]

    def word() -> str:
        r = rng.random()
        if r < 0.42:
            return rng.choice(FUNCTION)
        if r < 0.425:
            return rng.choice(EXTRA)
        return content[int(np.searchsorted(cum, rng.random()))]

    def fresh() -> list[str]:
        if rng.random() < 0.005:
            length = rng.randint(60, 150)
        else:
            length = min(40, max(2, round(rng.lognormvariate(math.log(12), 0.55))))
        words = [rng.choice(VERBS)] + [word() for _ in range(length - 1)]
        for i in range(1, len(words) - 1):
            if rng.random() < 0.05:
                words[i] += ","
        return words

    out: list[list[str]] = []
    for _ in range(n):
        if out and rng.random() < 0.45:
            base = out[rng.randrange(len(out))] if rng.random() < 0.5 else out[-rng.randint(1, min(50, len(out)))]
            words = list(base)
            r = rng.random()
            if r < 0.05:
                pass  # exact copy
            elif r < 0.1:
                words = [w.upper() if rng.random() < 0.3 else w for w in words]
            else:
                for _ in range(max(1, round(len(words) * rng.uniform(0.01, 0.6)))):
                    op = rng.random()
                    i = rng.randrange(len(words))
                    if op < 0.25 and len(words) > 1:
                        j = min(len(words) - 1, i + 1)
                        words[i], words[j] = words[j], words[i]
                    elif op < 0.5:
                        words.insert(i, word())
                    elif op < 0.75 and len(words) > 2:
                        del words[i]
                    else:
                        words[i] = word()
        else:
            words = fresh()
        out.append(words)
    return [" ".join(w) + rng.choice(".?.!:") for w in out]


# -- the straightforward loop (Stanford Alpaca's, single process) -------------------------------


def reference(texts: list[str], threshold: float = 0.7, top_k: int = 10) -> list[tuple]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_tokens: list[list[str]] = []
    pool: list[str] = []
    records = []
    for text in texts:
        tokens = scorer._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool_tokens]
        if not scores:
            records.append((True, 0.0, {}, 0.0))
        else:
            top = {pool[i]: scores[i] for i in np.argsort(scores, kind="stable")[-top_k:][::-1]}
            best = max(scores)
            records.append((not best > threshold, best, top, float(np.mean(scores))))
        if records[-1][0]:
            pool.append(text)
            pool_tokens.append(tokens)
    return records


def ours(texts: list[str], threshold: float = 0.7, top_k: int = 10) -> list[tuple]:
    d = Deduper(threshold, top_k)
    records = []
    for text in texts:
        r = d.consider(text)
        records.append((r.keep, r.max_score, r.most_similar, r.avg_similarity))
    return records


def same(a: tuple, b: tuple) -> bool:
    # dicts compared with their order; floats compared exactly
    return a[0] == b[0] and a[1] == b[1] and list(a[2].items()) == list(b[2].items()) and (
        a[3] == b[3]
    )


# -- parity on a larger set: rouge-score on every pair the overlap bound does not exclude --------


def parity(texts: list[str], threshold: float = 0.7, every: int = 25) -> dict:
    """Run ours and a pruned rouge-score reference in lock step (see the module docstring)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    margin = 1e-9
    d = Deduper(threshold)
    # Multiset-overlap index, independent of our code: (token, k-th occurrence) -> pool rows.
    post: dict[tuple[str, int], list[int]] = {}
    pool_tokens: list[list[str]] = []
    lengths: list[int] = []
    st = {"instructions": 0, "pairs": 0, "rouge_pairs": 0, "full_rows": 0, "kept": 0}
    bad: list[int] = []
    for i, text in enumerate(texts):
        tokens = scorer._tokenizer.tokenize(text)
        n = len(pool_tokens)
        got = d.scores(text)
        dec = d.check(text)
        seen: dict[str, int] = {}
        keys = []
        for t in tokens:
            seen[t] = seen.get(t, 0) + 1
            keys.append((t, seen[t]))
        rows = [post[k] for k in keys if k in post]
        overlap = np.bincount(np.concatenate(rows), minlength=n) if rows else np.zeros(n, int)
        bound = 2 * overlap / np.maximum(len(tokens) + np.asarray(lengths, dtype=float), 1)
        check = np.flatnonzero(bound > threshold - margin)
        ref = np.array([rouge_scorer._score_lcs(tokens, pool_tokens[j]).fmeasure for j in check])
        keep = not (ref.size and ref.max() > threshold)
        skipped = np.ones(n, dtype=bool)
        skipped[check] = False
        ok = (
            keep == dec.keep
            and len(got) == n
            and np.array_equal(got[check], ref)
            and not (got[skipped] > threshold).any()
            and not (got > bound + 1e-12).any()
        )
        if n and i % every == 0:
            full = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool_tokens]
            top = {d.texts[j]: full[j] for j in np.argsort(full, kind="stable")[-10:][::-1]}
            ok = ok and got.tolist() == full and dec.max_score == max(full)
            ok = ok and list(dec.most_similar.items()) == list(top.items())
            ok = ok and dec.avg_similarity == float(np.mean(full))
            st["full_rows"] += 1
        if not ok:
            bad.append(i)
        st["instructions"] += 1
        st["pairs"] += n
        st["rouge_pairs"] += len(check)
        if keep:
            st["kept"] += 1
            d.add(text)
            for k in keys:
                post.setdefault(k, []).append(n)
            pool_tokens.append(tokens)
            lengths.append(len(tokens))
    st["mismatch"] = len(bad)
    st["first_mismatch"] = bad[0] if bad else None
    return st


def best_of(repeat: int, fn, *args) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="500,1000,2000", help="speed-ratio sizes (comma list)")
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs, both sides")
    ap.add_argument("--parity", type=int, default=10000, help="instructions for the parity run")
    ap.add_argument("--full", type=int, default=52000, help="instructions timed for ours alone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="--sizes 500,1000 --parity 2000 --full 10000")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.parity, args.full = "500,1000", 2000, 10000
    sizes = [int(s) for s in args.sizes.split(",") if s]
    texts = synthetic(max([*sizes, args.parity, args.full]), args.seed)
    lens = np.array([len(tokenize(t)) for t in texts])
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"synthetic (seed {args.seed}): {len(texts):,} instructions, tokens median "
        f"{int(np.median(lens))}, p5 {int(np.percentile(lens, 5))}, p95 "
        f"{int(np.percentile(lens, 95))}, max {lens.max()}, > 64 tokens: {(lens > 64).sum()}",
        flush=True,
    )
    failed = False
    rows = []
    for size in sizes:
        t_ref, ref = best_of(args.repeat, reference, texts[:size])
        t_ours, got = best_of(args.repeat, ours, texts[:size])
        bad = sum(not same(a, b) for a, b in zip(ref, got, strict=True))
        failed |= bad > 0
        kept = sum(r[0] for r in ref)
        rows.append((size, kept, t_ref, t_ours, bad))
        print(
            f"n={size:,}: kept {kept:,}, rouge-score loop {t_ref:.2f} s, ours {t_ours:.3f} s, "
            f"ratio {t_ref / t_ours:.0f}x, records differing: {bad}",
            flush=True,
        )
    if args.parity:
        t0 = time.perf_counter()
        st = parity(texts[: args.parity])
        t_par = time.perf_counter() - t0
        failed |= st["mismatch"] > 0
        print(
            f"parity n={st['instructions']:,}: kept {st['kept']:,}; of {st['pairs']:,} pool "
            f"pairs rouge-score scored {st['rouge_pairs']:,} (it skipped only pairs with "
            f"2*overlap/(m+n) <= threshold - 1e-9, overlap = multiset token intersection >= LCS) "
            f"and {st['full_rows']} candidates against the whole pool; candidates differing: "
            f"{st['mismatch']} (first: {st['first_mismatch']}); {t_par:.0f} s",
            flush=True,
        )
    if args.full:
        t_full, got = best_of(1, ours, texts[: args.full])
        kept_full = sum(r[0] for r in got)
        print(f"ours n={args.full:,}: kept {kept_full:,}, {t_full:.1f} s", flush=True)

    print("\n| instructions | kept | rouge-score loop | ours | ours per instruction | ratio "
          "| records differing |")
    print("|---|---|---|---|---|---|---|")
    for size, kept, t_ref, t_ours, bad in rows:
        print(
            f"| {size:,} | {kept:,} | {t_ref:.2f} s | {t_ours:.3f} s | "
            f"{t_ours / size * 1e6:.0f} us | {t_ref / t_ours:.0f}x | {bad} |"
        )
    if args.parity:
        print(
            f"| {st['instructions']:,} | {st['kept']:,} | pruned rouge-score (lock step) | | | "
            f"| {st['mismatch']} |"
        )
    if args.full:
        print(
            f"| {args.full:,} | {kept_full:,} | | {t_full:.1f} s | "
            f"{t_full / args.full * 1e6:.0f} us | | |"
        )
    if rows:
        low = min(t_ref / t_ours for _, _, t_ref, t_ours, _ in rows)
        print(f"\nlowest ratio {low:.0f}x (target >= 100x)")
    if args.full:
        print(f"{args.full:,} instructions in {t_full:.1f} s (target <= 60 s for 52,000)")
    print("FAIL: decisions or scores differ" if failed else "OK: identical decisions and scores")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
