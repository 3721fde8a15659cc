"""pydantic validation errors as the one line a user acts on: each dotted key, what was expected,
what was given (never the raw value for our own validators, which may hold a secret)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


def describe_errors(exc: ValidationError, root: type[BaseModel], where: str = "", names: Mapping[str, str] = {}) -> str:
    """pydantic's errors as one line, each naming its dotted key (`names` renames keys for the SDK)."""
    parts = []
    for err in exc.errors(include_url=False):
        key = _dotted(err["loc"])
        shown = names.get(key, key)
        prefix = ".".join(p for p in (where, shown) if p)
        parts.append(f"{prefix}: {_explain(err, root)}" if prefix else _explain(err, root))
    return "; ".join(dict.fromkeys(parts))


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_EXPECTED = {
    "bool_type": "true or false", "bool_parsing": "true or false", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "an integer", "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "finite_number": "a finite number", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "dict_type": "a mapping", "list_type": "a list",
}

_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def _explain(err: dict[str, Any], root: type[BaseModel]) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        known = _known_keys(root, err["loc"][:-1])
        return "unknown setting" + (f"; known: {known}" if known else "")
    if kind in _BOUNDS:
        return f"expected a number {_BOUNDS[kind]} {next(iter(err['ctx'].values()))}, got {show_value(value)}"
    if kind == "string_too_short":
        return f"expected a non-empty string, got {show_value(value)}"
    if kind in _EXPECTED:
        hint = ""
        if kind.startswith("bool") and isinstance(value, str):
            hint = " (an ${oc.env:...} value is a string: wrap it in ${oc.decode:...})"
        return f"expected {_EXPECTED[kind]}, got {show_value(value)}{hint}"
    return err["msg"].removeprefix("Value error, ")  # our own validators' messages, never the raw input


def show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"the string {value[:60]!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    cls: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return []
        cls = _model_in(field.annotation)
    return sorted(cls.model_fields) if isinstance(cls, type) and issubclass(cls, BaseModel) else []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside `X`, `list[X]` or `X | None`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
