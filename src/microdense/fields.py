"""Typed, bounded dataclass fields: each field states what values it allows, and one check enforces it.

A configuration dataclass declares its fields with `setting(...)`; `check_fields(obj)` then refuses the first
value of the wrong type, out of range or not among the choices with one line naming the field, the value and
what is allowed. The same metadata lets tests generate wrong values for every field (`bad_values`), so a new
field is covered the day it is added.
"""
import dataclasses
import math
import typing
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from microdense.errors import ArgumentError, ConfigError

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, default_factory: Any = _MISSING, ge: Optional[float] = None,
            gt: Optional[float] = None, le: Optional[float] = None, lt: Optional[float] = None,
            choices: Optional[Sequence[Any]] = None, also: Sequence[Any] = ()) -> Any:
    """A dataclass field with its allowed values.

    Args:
        ge, gt, le, lt: bounds for a number (or for every number of a list).
        choices: the only values allowed (strings).
        also: values allowed besides the bounds, e.g. -1 for "no limit".
    """
    rules = dict(ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices else None, also=tuple(also))
    kwargs: Dict[str, Any] = dict(metadata={"rules": rules})
    if default_factory is not _MISSING:
        kwargs["default_factory"] = default_factory
    else:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def _rules(f: dataclasses.Field) -> Dict[str, Any]:
    return f.metadata.get("rules", {})


def _unwrap_optional(tp: Any) -> Tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, List):
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "whole numbers", float: "numbers", bool: "true or false values",
                               str: "strings"}.get(item, str(item))
    if origin in (dict, Dict) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _is_instance(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    origin = typing.get_origin(tp)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_is_instance(v, item) for v in value)
    if origin in (dict, Dict):
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, tp)


def _bounds_text(rules: Dict[str, Any]) -> str:
    parts = [f"{op} {rules[key]}" for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if rules.get(key) is not None]
    text = " and ".join(parts)
    if rules.get("also"):
        text += " (or " + ", ".join(map(str, rules["also"])) + ")"
    return text


def _in_bounds(value: float, rules: Dict[str, Any]) -> bool:
    if value in rules.get("also", ()):
        return True
    checks = (("gt", lambda b: value > b), ("ge", lambda b: value >= b), ("lt", lambda b: value < b),
              ("le", lambda b: value <= b))
    return all(rules.get(key) is None or ok(rules[key]) for key, ok in checks)


def check_value(owner: str, f: dataclasses.Field, tp: Any, value: Any) -> None:
    """Refuse `value` for field `f` (annotated `tp`) unless its type, range and choices allow it.

    Raises:
        ArgumentError: the value has the wrong type.
        ConfigError: the value is out of range or not among the choices.
    """
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return
        raise ArgumentError(f"{owner}.{f.name}: needs {_type_name(inner)}, got nothing (null)")
    if not _is_instance(value, inner):
        raise ArgumentError(f"{owner}.{f.name}: needs {_type_name(inner)}, got {value!r}")
    if dataclasses.is_dataclass(inner):  # a section of its own: its fields carry their own rules
        check_fields(value)
        return
    rules = _rules(f)
    if rules.get("choices") and value not in rules["choices"]:
        raise ConfigError(f"{owner}.{f.name}: unknown value {value!r}; choose one of {', '.join(rules['choices'])}")
    numbers = value if isinstance(value, list) else [value]
    for number in numbers:
        if isinstance(number, (int, float)) and not isinstance(number, bool) and not _in_bounds(number, rules):
            raise ConfigError(f"{owner}.{f.name}: {value!r} is out of range; it must be {_bounds_text(rules)}")


def check_fields(obj: Any) -> None:
    """Check every field of the dataclass instance `obj` against its type and `setting` rules."""
    hints = typing.get_type_hints(type(obj))
    owner = type(obj).__name__
    for f in dataclasses.fields(obj):
        check_value(owner, f, hints[f.name], getattr(obj, f.name))


def bad_values(cls: type) -> Iterator[Tuple[str, Any]]:
    """(field, value) pairs that `check_fields` must refuse, derived from each field's type and rules:
    a value of the wrong type, and values just outside each bound and choice list."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(hints[f.name])
        rules = _rules(f)
        yield f.name, ("not-a-number" if inner in (int, float, bool) else 12345)
        if dataclasses.is_dataclass(inner):  # a section: its own fields' wrong values, as "section.field"
            yield from ((f"{f.name}.{name}", value) for name, value in bad_values(inner))
            continue
        if inner is int:
            yield f.name, 1.5
        if rules.get("choices"):
            yield f.name, "no-such-choice"
        for key, outside in (("gt", 0), ("ge", -1), ("lt", 0), ("le", 1)):
            bound = rules.get(key)
            if bound is None:
                continue
            value = bound + outside if key in ("ge", "le") else bound
            if inner is float and key in ("ge", "le"):
                value = bound + outside * 0.5
            if typing.get_origin(inner) in (list, List):
                value = [value]
            if value not in rules.get("also", ()):
                yield f.name, value
