"""The JSON files a run keeps about itself (``handle.json``, ``run.json``, ``pipeline.json``),
read back as typed objects.

A damaged one (cut short by a full disk, edited by hand, left by a newer writer) becomes one
error naming the file, the field and what to do, never a traceback: the day-two commands
(`list`, `status`, `logs`, `cancel`) must keep working on a runs dir that holds one.
Fields this version does not know are ignored, so an older reader still reads a newer file.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError


def read_json(path: Path, fix: str, error: type[UserError] = UserError) -> Any | None:
    """The JSON value in ``path``; None when there is no such file; ``error`` naming the file
    and ``fix`` (what the user can do) when it cannot be read, is not UTF-8 or not JSON."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); {fix}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise error(f"{path}: not JSON ({exc}); {fix}") from None


def as_type(typ: Any, data: Any, source: str, error: type[UserError] = UserError,
            what: str = "a JSON object", fix: str = "", nonempty: tuple[str, ...] = ()) -> Any:
    """``data`` (``what``: a JSON object) as a ``typ`` (a dataclass), every field checked and
    those in ``nonempty`` not empty; ``error`` naming ``source``, each wrong or missing field
    and then ``fix`` otherwise."""
    from pydantic import ValidationError

    tail = f"\n{source}: {fix}" if fix else ""
    if not isinstance(data, dict):
        raise error(f"{source}: not {what}, got {type(data).__name__}{tail}")
    try:
        value = _adapter(typ).validate_python(data)
    except ValidationError as exc:
        raise error("\n".join(_problem(source, err) for err in exc.errors()) + tail) from None
    empty = [f for f in nonempty if not getattr(value, f)]
    if empty:
        raise error(f"{source}: {', '.join(empty)}: must not be empty{tail}")
    return value


@cache
def _adapter(typ: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(typ)


def _problem(source: str, err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = "required field is missing" if err["type"] == "missing" else f"{err['msg']} (got {err.get('input')!r})"
    return f"{source}: {loc}: {msg}"
