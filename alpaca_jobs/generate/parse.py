"""Turn a teacher's reply into candidate tasks, and the text filters they must pass.

The reply continues a prompt that ends with ``N. Instruction:``; blocks are separated by
``###`` and carry ``N. Instruction:``, ``N. Input:``, ``N. Output:``. A block cut off by the
length limit is dropped; ``<noinput>`` becomes an empty input. The filters are those of
Stanford Alpaca's public generation code (word counts, a list of words that need other
modalities, "Write a program", punctuation or non-ASCII first characters); the ROUGE-L
near-duplicate filter runs after them (``rouge.py``).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from alpaca_jobs.generate.prompt import NO_INPUT

# Tasks a text-only model cannot do (whole words, any case).
BLOCKED_WORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
                 "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart",
                 "diagram")
_BLOCKED = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in BLOCKED_WORDS) + r")\b", re.I)
_INSTRUCTION_START = re.compile(r"(?m)^(?=\s*\d+\s*\.\s*Instruction\s*:)")
_FIELD = re.compile(r"(?m)^\s*(\d+)\s*\.\s*(Instruction|Input|Output)\s*:")

REASONS = ("malformed_block", "truncated", "too_short", "too_long", "blocked_word",
           "write_a_program", "starts_with_punctuation", "starts_non_ascii", "empty_output",
           "similar")


@dataclass(frozen=True)
class Candidate:
    instruction: str
    input: str
    output: str


@dataclass(frozen=True)
class Parsed:
    candidates: list[Candidate]
    rejected: list[tuple[str, str]]  # (reason, the block's text or instruction)


def parse_reply(text: str, first_number: int, finish_reason: str | None) -> Parsed:
    """Blocks of ``text`` (the reply to a prompt ending at ``first_number. Instruction:``)."""
    # A completions model continues the prompt; a chat model often restates the number.
    starts_whole = re.match(r"\s*(?:###\s*)?\d+\s*\.\s*Instruction\s*:", text)
    full = text if starts_whole else f"{first_number}. Instruction:{text}"
    # Blocks end at ### or where the next numbered instruction starts (small models forget ###).
    blocks = [b for part in full.split("###") for b in _INSTRUCTION_START.split(part) if b.strip()]
    cands: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    for i, block in enumerate(blocks):
        if i == len(blocks) - 1 and finish_reason == "length":
            rejected.append(("truncated", block.strip()[:500]))
            continue
        cand = _fields(block)
        if cand is None:
            rejected.append(("malformed_block", block.strip()[:500]))
        else:
            cands.append(cand)
    return Parsed(cands, rejected)


def _fields(block: str) -> Candidate | None:
    marks = list(_FIELD.finditer(block))
    names = [m.group(2).lower() for m in marks]
    if names != ["instruction", "input", "output"]:
        return None
    values = [block[marks[j].end(): marks[j + 1].start() if j + 1 < 3 else len(block)].strip()
              for j in range(3)]
    instruction = re.sub(r"\s+", " ", values[0]).strip()
    inp = "" if values[1].strip().lower() == NO_INPUT else values[1]
    return Candidate(instruction, inp, values[2])


def text_filter(cand: Candidate, min_words: int = 4, max_words: int = 150) -> str | None:
    """The reason ``cand`` is rejected, or None if it passes the text filters."""
    inst = cand.instruction
    words = len(inst.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if _BLOCKED.search(inst):
        return "blocked_word"
    if inst.lower().startswith("write a program"):
        return "write_a_program"
    if inst[0] in string.punctuation:
        return "starts_with_punctuation"
    if not inst[0].isascii():
        return "starts_non_ascii"
    if not cand.output.strip():
        return "empty_output"
    return None
