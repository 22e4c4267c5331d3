"""What every config model shares: frozen and strict, read from YAML that refuses duplicate
keys, and validation errors as ``file: field.path: message`` lines.

A kind's or a backend's spec section is a ``Section`` (``alpaca_jobs/<kind>/config.py``,
``alpaca_jobs/backends/<backend>_config.py``); job specs (``alpaca_jobs.spec``) and pipeline
files (``alpaca_jobs.pipeline.spec``) are read and reported on with the functions here.
Imports pydantic and yaml only.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from alpaca_jobs.common.errors import SpecError


class Strict(BaseModel):
    """Frozen, and an unknown key is an error (listing the valid ones), never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(Strict):
    """A spec section owned by a kind (named after it) or a backend. Optional hooks see the
    whole validated spec: checks across sections, checks against the layout, and figures
    derived from them."""

    def check_spec(self, spec: Any) -> None:
        """Raise ValueError when this section does not fit the rest of ``spec`` (a JobSpec)."""

    def check_layout(self, spec: Any, layout: Any) -> dict[str, Any]:
        """Raise ValueError when this section cannot run on ``spec``'s hardware as ``layout``
        lays it out (e.g. the model does not fit in GPU memory); else figures worked out from
        both, shown by ``alpaca-jobs spec check``. Called once the layout file is read."""
        return {}

    def derived(self, spec: Any) -> dict[str, Any]:
        """Figures worked out from the spec, shown by ``alpaca-jobs spec check``."""
        return {}


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(f"{self.name}:{line}: duplicate key {key!r} (first given on line "
                                f"{seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; anything else is a SpecError naming the file (and line)."""
    from alpaca_jobs.common.textfiles import read_utf8

    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    text = read_utf8(path, SpecError)
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: must be a YAML mapping of fields, got {type(data).__name__}")
    return data


def format_validation(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    """One ``file: field.path: message`` line per error; unknown fields list the valid ones."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = valid_fields(model, err["loc"][:-1])
            msg = f"unknown field; valid fields here: {', '.join(valid)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}")
    return "\n".join(lines)


def valid_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model`` (empty if none is); list
    indices and mapping keys on the way are stepped over."""
    skip_key = False
    for part in loc:
        if isinstance(part, int) or skip_key:
            skip_key = False
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        options = [ann, *typing.get_args(ann)]  # X, X | None, list[X], dict[str, X]
        found = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return []
        skip_key = typing.get_origin(ann) is dict
        model = found[0]
    return sorted(model.model_fields)


def validate(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
    """``model`` from ``data``, or a SpecError with one line per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation(path, exc, model)) from None
