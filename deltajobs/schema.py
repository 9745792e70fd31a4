"""Typed dataclasses from plain dicts (YAML, `--set` overrides), validated once at the edge.

Each config section is a dataclass whose type hints are the schema. `from_dict` rejects unknown
keys, coerces values to the hinted types and checks the constraints a field carries in its
metadata (`minimum`, `maximum`, `pattern`). Every failure is a `SpecError` naming the dotted field,
the bad value and the valid choices or range.

Hand-written rather than pydantic: the schema is a few dozen fields, the error lines are ours to
shape, and the login-node CLI stays at stdlib + PyYAML import cost.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from deltajobs.errors import SpecError

T = TypeVar("T")

_NONE_WORDS = {"null", "none", "~", ""}


def constrained(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    pattern: str | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with validation metadata."""
    metadata = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "pattern": pattern,
        "doc": doc,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and ill-typed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(path or cls.__name__, f"expected a mapping, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = _join(path, str(unknown[0]))
        raise SpecError(where, f"unknown key; valid keys: {', '.join(fields)}")
    hints = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = coerce(value, hints[name], _join(path, name), fields[name].metadata)
    try:
        return cls(**values)
    except TypeError as err:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in values and _is_required(f)]
        raise SpecError(_join(path, missing[0] if missing else ""), "is required") from err


def coerce(value: Any, hint: Any, field: str, metadata: typing.Mapping[str, Any] = {}) -> Any:
    """Coerce `value` to the type `hint`, then check `metadata` constraints."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            if type(None) in get_args(hint):
                return None
            raise SpecError(field, "must not be null")
        if len(options) == 1:
            return coerce(value, options[0], field, metadata)
        for option in options:  # e.g. float | str: first that fits
            try:
                return coerce(value, option, field, metadata)
            except SpecError:
                continue
        names = " or ".join(_type_name(o) for o in options)
        raise SpecError(field, f"expected {names}, got {_show(value)}")
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            valid = ", ".join(str(c) for c in choices)
            raise SpecError(field, f"{_show(value)} is not valid; choose one of: {valid}")
        return value
    if origin is list:
        (item_hint,) = get_args(hint)
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list):
            raise SpecError(field, f"expected a list, got {_show(value)}")
        return [coerce(v, item_hint, f"{field}[{i}]", metadata) for i, v in enumerate(value)]
    if origin is dict:
        key_hint, value_hint = get_args(hint)
        if not isinstance(value, dict):
            raise SpecError(field, f"expected a mapping, got {_show(value)}")
        return {
            coerce(k, key_hint, f"{field}.{k}", {}): coerce(v, value_hint, f"{field}.{k}", {}) for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, field)  # type: ignore[arg-type]
    if hint is Any:
        return value
    result = _scalar(value, hint, field)
    check_constraints(result, field, metadata)
    return result


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one `--set KEY=VALUE` into (dotted key parts, YAML-typed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise SpecError("--set", f"{text!r} is not KEY=VALUE with a dotted key (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the string, the schema decides
    return key.split("."), value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set `data[a][b][c] = value` for parts [a, b, c], creating mappings on the way."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(".".join(parts), f"{part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _scalar(value: Any, hint: Any, field: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise SpecError(field, f"expected true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise SpecError(field, f"expected an integer, got {_show(value)}")
        if isinstance(value, float) and not value.is_integer():
            raise SpecError(field, f"expected an integer, got {_show(value)}")
        try:
            return int(value)
        except ValueError:
            raise SpecError(field, f"expected an integer, got {_show(value)}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SpecError(field, f"expected a number, got {_show(value)}")
        try:
            number = float(value)
        except ValueError:
            raise SpecError(field, f"expected a number, got {_show(value)}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise SpecError(field, f"expected a finite number, got {_show(value)}")
        return number
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SpecError(field, f"expected a string, got {_show(value)}")
        return str(value)
    raise SpecError(field, f"unsupported type {hint!r}")  # a schema bug, not user input


def check_constraints(value: Any, field: str, metadata: typing.Mapping[str, Any]) -> None:
    minimum, maximum = metadata.get("minimum"), metadata.get("maximum")
    exclusive_minimum = metadata.get("exclusive_minimum")
    if minimum is not None and value < minimum:
        raise SpecError(field, f"{_show(value)} is below the minimum {minimum}")
    if exclusive_minimum is not None and value <= exclusive_minimum:
        raise SpecError(field, f"{_show(value)} must be greater than {exclusive_minimum}")
    if maximum is not None and value > maximum:
        raise SpecError(field, f"{_show(value)} is above the maximum {maximum}")
    pattern = metadata.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, str(value)):
        raise SpecError(field, f"{_show(value)} does not match {pattern}")


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
