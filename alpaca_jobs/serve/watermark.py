"""Kirchenbauer et al. 2023, "A Watermark for Large Language Models" (soft watermark).

At every step the previous token and a secret key seed a permutation of the vocabulary; its
first ``gamma`` fraction is the green list, whose logits get ``+delta``. Detection re-derives
each position's green list from the text alone (with the key) and counts green tokens: with
T tokens scored and G green, ``z = (G - gamma T) / sqrt(T gamma (1 - gamma))``; without the
watermark G ~ Binomial(T, gamma), so a large z is evidence of it. Default threshold z >= 4.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WatermarkConfig:
    key: str
    gamma: float = 0.25
    delta: float = 2.0
    z_threshold: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1:
            raise ValueError("watermark gamma must be in (0, 1)")
        if self.delta < 0:
            raise ValueError("watermark delta must be >= 0")
        if not self.key:
            raise ValueError("watermark key must not be empty")


def _key_int(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "big")


class GreenLists:
    """Green-list membership for (previous token -> vocabulary), cached per previous token."""

    def __init__(self, cfg: WatermarkConfig, vocab_size: int) -> None:
        self.cfg, self.vocab = cfg, vocab_size
        self.size = int(cfg.gamma * vocab_size)
        self._key = _key_int(cfg.key)
        self._cache: dict[int, torch.Tensor] = {}

    def mask(self, prev: int) -> torch.Tensor:
        """Boolean mask over the vocabulary: True where the token is green after ``prev``."""
        m = self._cache.get(prev)
        if m is None:
            g = torch.Generator().manual_seed((self._key * 1_000_003 + prev) % (2**63 - 1))
            m = torch.zeros(self.vocab, dtype=torch.bool)
            m[torch.randperm(self.vocab, generator=g)[: self.size]] = True
            if len(self._cache) >= 2048:  # ~100 MB at a 49K vocabulary; cleared, not grown
                self._cache.clear()
            self._cache[prev] = m
        return m


class WatermarkLogitsProcessor:
    """A transformers LogitsProcessor: +delta on the green list of each row's last token."""

    def __init__(self, cfg: WatermarkConfig, vocab_size: int) -> None:
        self.cfg = cfg
        self.lists = GreenLists(cfg, vocab_size)
        self._bias: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def bias(self, prev: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """delta on the green list, 0 elsewhere: one dense add per row (no boolean scatter)."""
        key = (prev, device, dtype)
        b = self._bias.get(key)
        if b is None:
            b = (self.lists.mask(prev).to(dtype) * self.cfg.delta).to(device)
            if len(self._bias) >= 1024:  # ~200 MB of float32 at a 49K vocabulary
                self._bias.clear()
            self._bias[key] = b
        return b

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = min(scores.shape[-1], self.lists.vocab)
        for row in range(input_ids.shape[0]):
            scores[row, :n] += self.bias(int(input_ids[row, -1]), scores.device, scores.dtype)[:n]
        return scores


@dataclass(frozen=True)
class Detection:
    tokens_scored: int
    green: int
    z: float
    p_value: float
    watermarked: bool

    def as_dict(self) -> dict:
        return {"tokens_scored": self.tokens_scored, "green_tokens": self.green, "z_score": round(self.z, 4),
                "p_value": self.p_value, "watermarked": self.watermarked}


def scored_pairs(ids: list[int], vocab_size: int, ignore_repeated: bool = True) -> list[tuple[int, int]]:
    """The (previous token, token) pairs detection scores: each distinct pair once by default."""
    pairs = [(a, b) for a, b in zip(ids[:-1], ids[1:], strict=True) if b < vocab_size]
    return list(dict.fromkeys(pairs)) if ignore_repeated else pairs


def detect_ids(ids: list[int], cfg: WatermarkConfig, vocab_size: int, ignore_repeated: bool = True) -> Detection:
    """Score token ids (each against the green list of the token before it)."""
    lists = GreenLists(cfg, vocab_size)
    pairs = scored_pairs(ids, vocab_size, ignore_repeated)
    t = len(pairs)
    if t < 1:
        return Detection(0, 0, 0.0, 1.0, False)
    green = sum(bool(lists.mask(prev)[tok]) for prev, tok in pairs)
    z = (green - cfg.gamma * t) / math.sqrt(t * cfg.gamma * (1 - cfg.gamma))
    p = 0.5 * math.erfc(z / math.sqrt(2))  # one-sided: P(Z >= z)
    return Detection(t, green, z, p, z >= cfg.z_threshold)


def detect_text(text: str, tokenizer, cfg: WatermarkConfig, vocab_size: int) -> Detection:
    return detect_ids(tokenizer.encode(text, add_special_tokens=False), cfg, vocab_size)
