"""What one generation request asks of the decoder, and the errors it can meet.

A small module of its own so that ``engine`` (which admits requests) and ``batcher`` (which
decodes them) both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes more; int64 is what every client sends


class QueueFull(Exception):
    """More requests waiting than the queue holds."""


class BadRequest(ValueError):
    """A request the model cannot serve (too long, absurd max_tokens)."""


class RowFailed(RuntimeError):
    """Decoding one request failed; the other requests of its batch went on."""


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    watermark: bool = True


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length | cancelled


def apply_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """The text cut at the first stop sequence, and whether one was found."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
