"""The cell's events back from their plain form: `event_from_dict(to_dict(e)) == e`.

For the OPC UA server's own process, which gets the events as JSON lines. The plain form
(`controller.events.to_dict`) names each kind by `type` and writes enums as their lower-case
names, tuples as lists and floats that are not finite as null; each field's type hint says
how to read it back (a float field's null is NaN again).
"""

from __future__ import annotations

import math
import types
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from controller.events import EVENT_TYPES, Event

_KINDS: dict[str, type[Any]] = {name: kind for kind, name in EVENT_TYPES.items()}


class EventDecodeError(ValueError):
    """A plain event that is not one of the cell's; the message says why (one line)."""


def event_from_dict(plain: dict[str, Any]) -> Event:
    """The event whose plain form is `plain` (`EventDecodeError` when it is none)."""
    kind = _KINDS.get(str(plain.get("type")))
    if kind is None:
        raise EventDecodeError(f"unknown event type {plain.get('type')!r}")
    try:
        event: Event = _read(kind, plain)
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(f"{plain.get('type')}: {type(exc).__name__}: {exc}") from None
    return event


@cache
def _hints(kind: type[Any]) -> dict[str, Any]:
    return get_type_hints(kind)


@cache
def _enum_names(kind: type[Enum]) -> dict[str, Enum]:
    return {m.name.lower(): m for m in kind}


def _read(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]  # the fields use `X | None` only
        return _read(inner, value)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_read(args[0], v) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{len(value)} values for a tuple of {len(args)}")
        return tuple(_read(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        key, val = get_args(tp)
        return {_read(key, k): _read(val, v) for k, v in value.items()}
    if origin is list:
        (item,) = get_args(tp)
        return [_read(item, v) for v in value]
    if isinstance(tp, type) and is_dataclass(tp):
        hints, read = _hints(tp), {}
        for f in fields(tp):
            if f.name in value:
                try:
                    read[f.name] = _read(hints[f.name], value[f.name])
                except (KeyError, TypeError, ValueError) as exc:  # say which field, nested too
                    raise ValueError(f"{f.name}: {exc}") from None
        return tp(**read)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _enum_names(tp)[str(value)]
    if tp is float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, found {value!r}")
        return float(value)
    if tp in (int, str, bool) and type(value) is not tp:  # JSON's own types: read as they are
        raise TypeError(f"expected {tp.__name__}, found {value!r}")
    return value


__all__ = ["EventDecodeError", "event_from_dict"]
