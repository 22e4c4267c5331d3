"""Training data: Alpaca JSON/JSONL (or self-instruct seed JSONL) records, read by
``common.datafile``, cleaned, tokenized, prompts masked.

No torch here: the CLI validates data files with this module before submitting anything.
Bad records are errors naming the file and line; empty outputs and duplicates are skipped and
counted; over-long examples are truncated to ``max_length`` and counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alpaca_jobs.common.datafile import Record, read_records  # the file format: shared
from alpaca_jobs.common.errors import DataError
from alpaca_jobs.common.template import format_prompt

IGNORE_INDEX = -100  # label of tokens that carry no loss (the prompt)


@dataclass
class DataStats:
    records_read: int = 0
    kept: int = 0
    skipped_empty_output: int = 0
    skipped_duplicate: int = 0
    skipped_no_target_tokens: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    target_tokens: int = 0
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["details"] = self.details[:20]
        return out


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_targets(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def clean_records(records: list[Record], stats: DataStats) -> list[Record]:
    """Drop empty outputs and exact duplicates, counting both."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for rec in records:
        stats.records_read += 1
        if not rec.output.strip():
            stats.skipped_empty_output += 1
            stats.details.append(f"{rec.where}: empty output, skipped")
            continue
        key = (rec.instruction.strip(), rec.input.strip(), rec.output.strip())
        if key in seen:
            stats.skipped_duplicate += 1
            stats.details.append(f"{rec.where}: duplicate record, skipped")
            continue
        seen.add(key)
        kept.append(rec)
    return kept


class Tokenizer(Protocol):
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...


def tokenize_record(
    tok: Tokenizer, rec: Record, max_length: int, preambles: tuple[str, str]
) -> tuple[Example, bool]:
    """Prompt ids (labels -100) + output ids + EOS; truncated to max_length. Returns (ex, truncated).

    Prompt and output are tokenized separately so the prompt/target boundary is exact.
    """
    prompt = format_prompt(rec.instruction, rec.input, *preambles)
    prompt_ids = tok.encode(prompt, add_special_tokens=True)
    if tok.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token; the target must end with one")
    target_ids = tok.encode(rec.output, add_special_tokens=False) + [tok.eos_token_id]
    ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    truncated = len(ids) > max_length
    return Example(ids[:max_length], labels[:max_length]), truncated


def build_examples(
    path: str | Path, tok: Tokenizer, max_length: int, preambles: tuple[str, str]
) -> tuple[list[Example], DataStats]:
    """Read, clean and tokenize a data file; counts go into the returned stats."""
    stats = DataStats()
    examples = []
    for rec in clean_records(read_records(path), stats):
        ex, truncated = tokenize_record(tok, rec, max_length, preambles)
        if ex.num_targets == 0:
            stats.skipped_no_target_tokens += 1
            stats.details.append(f"{rec.where}: prompt alone fills max_length, skipped")
            continue
        stats.truncated += truncated
        stats.kept += 1
        stats.target_tokens += ex.num_targets
        stats.prompt_tokens += len(ex.input_ids) - ex.num_targets
        examples.append(ex)
    if not examples:
        raise DataError(f"{path}: no usable examples after cleaning ({stats.as_dict()})")
    return examples, stats
