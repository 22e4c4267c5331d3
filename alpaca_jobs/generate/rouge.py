"""Exact, fast ROUGE-L near-duplicate filter for self-instruct generation.

Stanford Alpaca keeps a generated instruction only if its ROUGE-L F-measure against every
instruction already in the pool is <= 0.7 (``rouge_score.rouge_scorer.RougeScorer(["rougeL"],
use_stemmer=False)``, i.e. rouge-score's default tokenizer and no stemming), and records for
each kept instruction its ten most similar pool instructions and its mean similarity to the
whole pool. :class:`Deduper` makes exactly the same decisions and reports bit-identical
scores, but scores a candidate against the whole pool at once:

* Tokens become integer ids; for every token the pool keeps a postings list of the
  instructions that contain it, with the bit mask of the positions where it occurs.
* The LCS of the candidate with every pool instruction is computed together by the
  bit-parallel LCS recurrence (Allison-Dix / Hyyroe): one bit vector per pool instruction,
  ``V = all ones``; for each candidate token with match mask ``M``: ``U = V & M``,
  ``V = (V + U) | (V - U)``; the LCS is the number of zero bits. Each candidate token touches
  only the pool instructions that contain it (numpy gather, four ops, scatter over its
  postings, ``uint64`` per instruction of up to 64 tokens), so pairs that share no token cost
  nothing and keep LCS 0.
* The rare instructions of more than 64 tokens, and every instruction while the pool is small
  (where per-call overhead, not arithmetic, is the cost), are packed side by side into one
  Python integer, each in its own field with a guard bit that stops carries: one big-integer
  step per candidate token runs the same recurrence on all of them at once, for any length.
* The F-measure is then computed from the integer LCS and the two lengths with rouge-score's
  own float expression (``p = lcs / len(pool item)``, ``r = lcs / len(candidate)``,
  ``2 * p * r / (p + r)``, 0 when the LCS is 0), element-wise in float64, so every score -
  and therefore the ``> threshold`` decision, the maximum, the top-k and ``np.mean`` of the
  scores - is bit-identical to rouge-score's.

Where it can differ from Alpaca's code, by design:

* Ties in the top-k: upstream takes ``np.argsort(scores)[-10:][::-1]``, whose order among equal
  scores depends on numpy's (unstable, hardware-specific) sort. :class:`Deduper` returns what
  that expression gives with a stable sort: scores descending, and among equal scores the most
  recently added instruction first.
* rouge-score returns an int ``0`` when either side has no tokens; :class:`Deduper` reports
  ``0.0`` (equal in value, and in ``np.mean``).
* An empty pool (upstream always starts from the seed tasks): keep, with 0.0, {}, 0.0.

Usage (the generate job): ``add()`` the seed tasks and, after a restart, the instructions
already generated; then ``d = dedup.consider(text)`` for each new instruction, and record
``d.most_similar`` / ``d.avg_similarity`` when ``d.keep``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Decision", "Deduper", "rouge_l", "tokenize"]

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_WORD = 64

if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def _popcount(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x)

else:  # pragma: no cover - numpy 1.x
    _BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        b = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, x.itemsize)
        return _BYTE_POP[b].sum(axis=-1, dtype=np.uint8)


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokenizer without stemming.

    Lowercase (``str.lower``), replace every run of characters outside ``[a-z0-9]`` by a space,
    split. That leaves exactly the tokens matching rouge-score's ``^[a-z0-9]+$`` filter.
    """
    return _NON_ALPHANUM.sub(" ", text.lower()).split()


def _fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's ``_score_lcs`` F-measure from the integer LCS, same float operations."""
    if not target_len or not prediction_len:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _lcs(a: list, b: list) -> int:
    """LCS length by the bit-parallel recurrence over Python ints (any length)."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F-measure of token lists, bit-identical to ``rouge_scorer._score_lcs(a, b)``.

    ``a`` is rouge-score's target, ``b`` its prediction (the F-measure is symmetric anyway:
    ``2 * p * r`` and ``p + r`` are exactly commutative in IEEE arithmetic).
    """
    return _fmeasure(_lcs(a, b), len(a), len(b))


@dataclass
class Decision:
    """Outcome of comparing one candidate with the pool.

    ``keep`` is False when ``max_score > threshold``. ``most_similar`` maps the top-k pool
    texts to their scores (best first); ``avg_similarity`` is ``np.mean`` of the scores against
    the whole pool. With an empty pool: keep, 0.0, {}, 0.0.
    """

    keep: bool
    max_score: float
    most_similar: dict[str, float] = field(default_factory=dict)
    avg_similarity: float = 0.0


class _Postings:
    """(pool row, match mask) lists of one token. Appends go to Python lists and are moved to
    the numpy arrays (grown geometrically) when the token is next scored; ``rv``/``mv`` view the
    filled part."""

    __slots__ = ("masks", "mv", "pending_masks", "pending_rows", "rows", "rv", "size")

    def __init__(self, row: int, mask: int) -> None:
        self.size = 0
        self.rows = self.masks = self.rv = self.mv = None  # allocated by the first flush
        self.pending_rows = [row]
        self.pending_masks = [mask]

    def flush(self) -> None:
        start = self.size
        end = start + len(self.pending_rows)
        if self.rows is None:
            self.rows = np.empty(max(4, end), dtype=np.intp)
            self.masks = np.empty(max(4, end), dtype=np.uint64)
        elif end > len(self.rows):
            cap = max(2 * len(self.rows), end)
            self.rows = np.resize(self.rows, cap)
            self.masks = np.resize(self.masks, cap)
        if end == start + 1:
            self.rows[start] = self.pending_rows[0]
            self.masks[start] = self.pending_masks[0]
        else:
            self.rows[start:end] = self.pending_rows
            self.masks[start:end] = self.pending_masks
        self.pending_rows.clear()
        self.pending_masks.clear()
        self.size = end
        self.rv = self.rows[:end]
        self.mv = self.masks[:end]


class _Packed:
    """Rows as fields of one Python integer, each ``16 * ceil((len + 1) / 16)`` bits wide and
    16-bit aligned: the low ``len`` bits hold the row's bit vector, the bit above is a guard.

    One big-integer step runs the LCS recurrence on every row at once: within a field
    ``V + U < 2 ** (len + 1)``, so a carry stops in the guard bit and ``& ones`` clears it, which
    is the recurrence modulo ``2 ** len`` as it should be; ``V - U`` never borrows (``U`` is a
    subset of ``V``). Any row length works, and small pools cost a few operations per token.
    """

    __slots__ = ("bits", "lengths", "masks", "n", "ones", "units")

    def __init__(self) -> None:
        self.masks: dict[int, int] = {}  # token id -> its positions in every field
        self.ones = 0  # the low `len` bits of every field
        self.bits = 0
        self.n = 0
        self.units = np.zeros(16, dtype=np.intp)  # first 16-bit unit of each field
        self.lengths = np.zeros(16, dtype=np.int64)

    def add(self, masks: dict[int, int], length: int) -> None:
        if self.n == len(self.units):
            self.units = np.resize(self.units, 2 * self.n)
            self.lengths = np.resize(self.lengths, 2 * self.n)
        off = self.bits
        self.units[self.n] = off // 16
        self.lengths[self.n] = length
        self.n += 1
        self.bits = off + 16 * -(-(length + 1) // 16)
        self.ones |= ((1 << length) - 1) << off
        table = self.masks
        for tid, mask in masks.items():
            table[tid] = table.get(tid, 0) | (mask << off)

    def lcs(self, ids: list[int]) -> np.ndarray:
        """LCS of the token-id sequence ``ids`` with every row (int64, in row order)."""
        ones = self.ones
        table = self.masks
        v = ones
        for tid in ids:
            mask = table.get(tid)
            if mask:
                u = v & mask
                v = ((v + u) | (v - u)) & ones
        units = np.frombuffer(v.to_bytes(self.bits // 8, "little"), dtype=np.uint16)
        n = self.n
        set_bits = np.add.reduceat(_popcount(units), self.units[:n], dtype=np.int64)
        return self.lengths[:n] - set_bits


def _f_table(target_len: int) -> np.ndarray:
    """F-measure for every (prediction length, LCS) up to 64, flattened as ``plen * 65 + lcs``,
    for a candidate of ``target_len`` tokens: rouge-score's expression, element-wise; one more
    0 at the end (index `_LONG_BASE`) for the rows scored separately."""
    lcs = np.arange(_WORD + 1, dtype=np.int64)[None, :]
    plen = np.arange(_WORD + 1, dtype=np.int64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / plen
        recall = lcs / target_len
        f = 2 * precision * recall / (precision + recall)
    f[(lcs == 0) | (plen == 0) | (lcs > plen) | (lcs > target_len)] = 0.0
    return np.append(f.ravel(), 0.0)


_LONG_BASE = (_WORD + 1) ** 2  # index of the final 0; `take(mode="clip")` keeps larger ones there


def _f_vector(lcs: np.ndarray, prediction_len: np.ndarray, target_len: int) -> np.ndarray:
    """rouge-score's expression element-wise, for lcs > 0."""
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


class Deduper:
    """Sequential ROUGE-L filter: a candidate is kept unless it scores > threshold against any
    instruction in the pool (the kept ones, and whatever was :meth:`add`-ed)."""

    # Pools up to this size: all rows in one `_Packed` big integer (fewer calls per token);
    # above it, numpy over the postings. Results never depend on it (the tests force both).
    _packed_max = 1200

    def __init__(self, threshold: float = 0.7, top_k: int = 10) -> None:
        self.threshold = threshold
        self.top_k = top_k
        self._texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._n = 0
        self._tables: dict[int, np.ndarray] = {}
        cap = 64
        self._base = np.zeros(cap, dtype=np.int64)  # table offset: plen * 65, or _LONG_BASE
        self._v = np.empty(cap, dtype=np.uint64)  # scratch bit vectors, one per pool row
        self._short: dict[int, _Postings] = {}  # token id -> rows of <= 64 tokens containing it
        self._long = _Packed()  # rows of > 64 tokens (rare)
        self._long_rows: list[int] = []
        self._long_index = np.zeros(0, dtype=np.intp)
        self._small: _Packed | None = _Packed()  # every row, while the pool is small

    def __len__(self) -> int:
        return self._n

    @property
    def texts(self) -> list[str]:
        """The pool, in the order it was built."""
        return list(self._texts)

    # -- building the pool ------------------------------------------------------------------

    def add(self, text: str) -> None:
        """Add ``text`` to the pool unconditionally (e.g. seeds, or rebuilding after a restart)."""
        self._add(text, tokenize(text))

    def _add(self, text: str, tokens: list[str]) -> None:
        row = self._n
        if row == len(self._base):
            cap = 2 * row
            self._base = np.resize(self._base, cap)
            self._v = np.empty(cap, dtype=np.uint64)
        length = len(tokens)
        self._base[row] = length * (_WORD + 1) if length <= _WORD else _LONG_BASE
        self._texts.append(text)
        self._n += 1
        masks: dict[int, int] = {}
        vocab = self._vocab
        for pos, tok in enumerate(tokens):
            tid = vocab.get(tok)
            if tid is None:
                tid = vocab[tok] = len(vocab)
            masks[tid] = masks.get(tid, 0) | (1 << pos)
        if self._small is not None:
            if self._n > self._packed_max:
                self._small = None  # the numpy paths take over for good
            else:
                self._small.add(masks, length)
        if length <= _WORD:
            store = self._short
            for tid, mask in masks.items():
                p = store.get(tid)
                if p is None:
                    store[tid] = _Postings(row, mask)
                else:
                    p.pending_rows.append(row)
                    p.pending_masks.append(mask)
        else:
            self._long.add(masks, length)
            self._long_rows.append(row)
            self._long_index = np.asarray(self._long_rows, dtype=np.intp)

    # -- scoring ----------------------------------------------------------------------------

    def scores(self, text: str) -> np.ndarray:
        """ROUGE-L F-measure of ``text`` against every pool instruction, in pool order (float64,
        each value bit-identical to rouge-score's)."""
        return self._scores(tokenize(text))

    def _scores(self, tokens: list[str]) -> np.ndarray:
        n = self._n
        if not n or not tokens:
            return np.zeros(n, dtype=np.float64)
        m = len(tokens)
        vocab = self._vocab
        ids = [vocab.get(t, -1) for t in tokens]
        table = self._tables.get(m)
        if table is None:
            table = self._tables[m] = _f_table(m)

        if self._small is not None:
            lcs = self._small.lcs(ids)
            out = table.take(self._base[:n] + lcs, mode="clip")
            if self._long_rows:
                rows = self._long_index
                self._put_long(out, rows, lcs.take(rows), m)
            return out

        short = self._short
        posts = [short[t] for t in ids if t in short]
        for p in posts:
            if p.pending_rows:
                p.flush()
        v = self._v[:n]
        v.fill(_ALL)
        for p in posts:  # only the rows that contain the token
            rows = p.rv
            x = v.take(rows)
            u = x & p.mv
            y = x - u  # == x & ~mask: u is a subset of x, so no borrow
            x += u
            x |= y
            v[rows] = x  # (faster than put)
        # LCS = zero bits of v (untouched rows stay all ones: LCS 0, F 0).
        out = table.take(self._base[:n] + (_WORD - _popcount(v)), mode="clip")
        if self._long_rows:
            self._put_long(out, self._long_index, self._long.lcs(ids), m)
        return out

    def _put_long(self, out: np.ndarray, rows: np.ndarray, lcs: np.ndarray, m: int) -> None:
        if len(rows) <= 8:  # few: plain Python is cheaper than numpy calls
            lengths = self._long.lengths
            for j, (row, c) in enumerate(zip(self._long_rows, lcs.tolist(), strict=True)):
                if c:
                    out[row] = _fmeasure(c, m, int(lengths[j]))
            return
        hit = np.flatnonzero(lcs)
        if hit.size:
            rows = rows[hit]
            out[rows] = _f_vector(lcs[hit], self._long.lengths[hit], m)

    def _top(self, scores: np.ndarray) -> list[int]:
        """``np.argsort(scores, kind="stable")[-k:][::-1]``: best first, ties latest first."""
        n, k = len(scores), self.top_k
        if k <= 0:
            return []
        if n <= k:
            return np.argsort(scores, kind="stable")[::-1].tolist()
        kth = np.partition(scores, n - k)[n - k]
        idx = np.flatnonzero(scores >= kth)
        if len(idx) <= 4 * k:
            pairs = sorted(zip(scores.take(idx).tolist(), idx.tolist(), strict=True), reverse=True)
            return [i for _, i in pairs[:k]]
        above = np.flatnonzero(scores > kth)  # many ties at the k-th score
        above = above[np.lexsort((-above, -scores[above]))]
        ties = np.flatnonzero(scores == kth)[::-1][: k - len(above)]
        return [*above.tolist(), *ties.tolist()]

    def check(self, text: str) -> Decision:
        """Compare ``text`` with the pool without adding it."""
        return self._check(tokenize(text))

    def _check(self, tokens: list[str]) -> Decision:
        n = self._n
        if not n:
            return Decision(True, 0.0, {}, 0.0)
        scores = self._scores(tokens)
        best = float(scores.max())
        texts = self._texts
        top = self._top(scores)
        top = dict(zip([texts[i] for i in top], scores.take(top).tolist(), strict=True))
        # == float(np.mean(scores)): np.mean is add.reduce over the array, divided by the count
        avg = float(np.add.reduce(scores, axis=None) / n)
        return Decision(not best > self.threshold, best, top, avg)

    def consider(self, text: str) -> Decision:
        """:meth:`check`, then :meth:`add` if kept."""
        tokens = tokenize(text)
        decision = self._check(tokens)
        if decision.keep:
            self._add(text, tokens)
        return decision
