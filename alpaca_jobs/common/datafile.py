"""Instruction data files: Alpaca JSON/JSONL records, or self-instruct seed JSONL (one
record per instance). What generate writes, train reads, and a tiny preset's tokenizer learns
from. Bad records are errors naming the file and line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import DataError
from alpaca_jobs.common.textfiles import check_text, read_utf8


@dataclass(frozen=True)
class Record:
    instruction: str
    input: str
    output: str
    where: str  # "file:line" for messages


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
