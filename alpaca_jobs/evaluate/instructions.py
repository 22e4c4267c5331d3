"""Instruction sets in the self-instruct *user-oriented* format, one JSON object a line:

    {"id": "...", "motivation_app": "...", "instruction": "...",
     "instances": [{"input": "...", "output": "..."}]}

Each instance becomes one evaluation item (an instruction with two instances is two items, ids
``<id>-1`` and ``<id>-2``). The instance's ``output`` is a reference answer: shown in the HTML
report for the reader, never to the systems or the judges. Extra keys are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.textfiles import read_utf8


@dataclass(frozen=True)
class Item:
    id: str
    instruction: str
    input: str
    reference: str
    app: str

    @property
    def prompt(self) -> str:
        """What each system is sent: the instruction, then its input (if any) after a blank line."""
        return f"{self.instruction}\n\n{self.input}" if self.input.strip() else self.instruction


def load_items(path: str | Path, limit: int | None = None) -> list[Item]:
    """All items of a user-oriented JSONL file (the first ``limit`` of them). Raises UserError
    naming ``file:line`` and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such instruction file (self-instruct user-oriented JSONL)")
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        record = _parse(line, where)
        rid = record["id"]
        if rid in seen:
            raise UserError(f"{where}: id {rid!r} already used on line {seen[rid]}; ids must be unique")
        seen[rid] = lineno
        instances = record["instances"]
        for k, inst in enumerate(instances, start=1):
            item_id = rid if len(instances) == 1 else f"{rid}-{k}"
            items.append(Item(item_id, record["instruction"].strip(), inst.get("input", ""),
                              inst.get("output", ""), record.get("motivation_app", "")))
    if not items:
        raise UserError(f"{path}: no instructions in the file")
    return items[:limit] if limit else items


def _parse(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                        "each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: must be a JSON object, got {type(record).__name__}")
    for key in ("id", "instruction"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise UserError(f"{where}: {key!r} must be a non-empty string")
    if not isinstance(record.get("motivation_app", ""), str):
        raise UserError(f"{where}: 'motivation_app' must be a string")
    instances = record.get("instances")
    if not isinstance(instances, list) or not instances:
        raise UserError(f"{where}: 'instances' must be a non-empty list of {{\"input\", \"output\"}} "
                        "objects (use [{\"input\": \"\", \"output\": \"\"}] for no input)")
    for k, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise UserError(f"{where}: instances[{k}] must be an object with 'input' and 'output'")
        for key in ("input", "output"):
            if not isinstance(inst.get(key, ""), str):
                raise UserError(f"{where}: instances[{k}].{key} must be a string")
    return record
