"""Seed tasks in the self-instruct seed format (JSONL, one task a line):
``{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}``.

Our own 175 tasks live in ``seeds/seed_tasks.jsonl``; upstream self-instruct seed files load
as they are. A malformed line is an error naming the file and line and what to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alpaca_jobs.common.errors import DataError
from alpaca_jobs.common.textfiles import check_text, read_utf8


@dataclass(frozen=True)
class SeedTask:
    instruction: str
    input: str
    output: str
    where: str


def load_seeds(path: str | Path) -> list[SeedTask]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such seed file (generate.seeds); give self-instruct seed JSONL")
    tasks: list[SeedTask] = []
    for n, line in enumerate(read_utf8(path, DataError).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                            "each line must be one seed task object") from None
        tasks.append(_task(obj, where))
    if not tasks:
        raise DataError(f"{path}: no seed tasks in the file")
    return tasks


def _task(obj: object, where: str) -> SeedTask:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a seed task must be a JSON object, got {type(obj).__name__}")
    instruction = obj.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError(f"{where}: 'instruction' must be a non-empty string")
    instances = obj.get("instances")
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        raise DataError(f"{where}: 'instances' must be a non-empty list of {{input, output}} objects")
    first = instances[0]
    values = []
    for key in ("input", "output"):
        value = first.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise DataError(f"{where}: instances[0].{key} must be a string, got {type(value).__name__}")
        values.append(value)
    if not values[1].strip():
        raise DataError(f"{where}: instances[0].output is empty; a seed task needs an example output")
    check_text(instruction + values[0] + values[1], where, DataError)
    return SeedTask(instruction.strip(), values[0].strip(), values[1].strip(), where)
