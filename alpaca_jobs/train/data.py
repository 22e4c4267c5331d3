"""Training data: load Alpaca JSON/JSONL (or self-instruct seed JSONL), tokenize, mask prompts.

No torch here: the CLI validates data files with this module before submitting anything.
Bad records are errors naming the file and line; empty outputs and duplicates are skipped and
counted; over-long examples are truncated to ``max_length`` and counted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alpaca_jobs.common.errors import DataError
from alpaca_jobs.common.template import format_prompt
from alpaca_jobs.common.textfiles import check_text, read_utf8

IGNORE_INDEX = -100  # label of tokens that carry no loss (the prompt)


@dataclass(frozen=True)
class Record:
    instruction: str
    input: str
    output: str
    where: str  # "file:line" for messages


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


def _field(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise DataError(f"{where}: missing field {key!r}; each record needs instruction, output")
        return ""
    value = obj[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return check_text(value, f"{where}: field {key!r}", DataError)


def _records_from_obj(obj: Any, where: str) -> list[Record]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: each record must be a JSON object, got {type(obj).__name__}")
    if "instances" in obj:  # self-instruct seed format: one example per instance
        instruction = _field(obj, "instruction", where)
        instances = obj["instances"]
        if not isinstance(instances, list):
            raise DataError(f"{where}: 'instances' must be a list of {{input, output}}")
        out = []
        for inst in instances:
            if not isinstance(inst, dict):
                raise DataError(f"{where}: each instance must be an object with input, output")
            out.append(
                Record(instruction, _field(inst, "input", where, False), _field(inst, "output", where), where)
            )
        return out
    return [
        Record(
            _field(obj, "instruction", where),
            _field(obj, "input", where, required=False),
            _field(obj, "output", where),
            where,
        )
    ]


def read_records(path: str | Path) -> list[Record]:
    """All records of a data file, in file order. Raises DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    text = read_utf8(path, DataError)
    stripped = text.lstrip()
    records: list[Record] = []
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        for i, item in enumerate(items):
            records.extend(_records_from_obj(item, f"{path} record {i}"))
        return records
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove this line"
            ) from None
        records.extend(_records_from_obj(obj, f"{path}:{lineno}"))
    if not records:
        raise DataError(f"{path}: no records; expected a JSON list or JSON lines of records")
    return records


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
