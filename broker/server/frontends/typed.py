# Maps of plain values (what msgpack or JSON decode to) <-> the engine's typed requests and answers, driven by the
# dataclasses' type hints: a request class is its own schema. Wire rules (DESIGN section 6): a core field `x_s`
# (float seconds) is `x_ms` (integer milliseconds) on the wire; a NamedTuple is an array; an Enum is its lowercase
# name. Shared by codecs that speak maps; knows no protocol's framing and no API's meaning.
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Callable

from millpond.broker.wire.errors import InvalidRequestError

_NONE = type(None)
_Check = Callable[[Any, str], Any]  # (value, where) -> converted value; raises _Bad


class _Bad(Exception):
    pass


def _describe(tp: Any) -> str:
    if tp is _NONE:
        return "null"
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "bool": "boolean", "bytes": "bytes", "float": "number"}.get(
            tp.__name__, tp.__name__)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"array of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "map"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return str(tp)


def _type_name(value: Any) -> str:
    return {list: "array", tuple: "array", dict: "map", str: "string", int: "integer", bool: "boolean",
            bytes: "bytes", float: "number", _NONE: "null"}.get(type(value), type(value).__name__)


def _checker(tp: Any) -> _Check:
    """A converter for values of type ``tp``; raises ``_Bad`` with the expectation when a value does not fit."""
    if tp is Any:
        return lambda v, where: v
    if tp in (str, bytes, bool):
        def check_exact(v: Any, where: str, tp: type = tp) -> Any:
            if type(v) is tp or (tp is bytes and type(v) is bytearray):
                return v
            raise _Bad(f"{where} must be {_describe(tp)}, got {_type_name(v)}")
        return check_exact
    if tp is int:
        def check_int(v: Any, where: str) -> int:
            if type(v) is int:
                return v
            raise _Bad(f"{where} must be an integer, got {_type_name(v)}")
        return check_int
    if tp is float:
        def check_float(v: Any, where: str) -> float:
            if type(v) in (int, float):
                return float(v)
            raise _Bad(f"{where} must be a number, got {_type_name(v)}")
        return check_float
    if tp is _NONE:
        def check_none(v: Any, where: str) -> None:
            if v is None:
                return None
            raise _Bad(f"{where} must be null, got {_type_name(v)}")
        return check_none
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_checker(a) for a in args if a is not _NONE]
        optional = _NONE in args

        def check_union(v: Any, where: str) -> Any:
            if v is None and optional:
                return None
            if len(options) == 1 and type(v) in (dict, list, tuple):  # "X or null" given a container: X's own
                return options[0](v, where)  # error names what inside it is wrong
            for option in options:
                try:
                    return option(v, where)
                except _Bad:
                    pass
            raise _Bad(f"{where} must be {_describe(tp)}, got {_type_name(v)}")
        return check_union
    if origin is typing.Literal:
        def check_literal(v: Any, where: str) -> Any:
            if v in args and type(v) in {type(a) for a in args}:
                return v
            raise _Bad(f"{where} must be {_describe(tp)}, got {v!r}")
        return check_literal
    if origin is tuple:
        item = _checker(args[0])

        def check_tuple(v: Any, where: str) -> tuple:
            if type(v) not in (list, tuple):
                raise _Bad(f"{where} must be {_describe(tp)}, got {_type_name(v)}")
            try:
                return tuple([item(x, "") for x in v])
            except _Bad:  # again, to name the item (names are built only for a message)
                for i, x in enumerate(v):
                    item(x, f"{where}[{i}]")
                raise
        return check_tuple
    if origin is dict:
        key, value = (_checker(a) for a in args)

        def check_dict(v: Any, where: str) -> dict:
            if type(v) is not dict:
                raise _Bad(f"{where} must be a map, got {_type_name(v)}")
            return {key(k, f"{where} key"): value(x, f"{where}[{k!r}]") for k, x in v.items()}
        return check_dict
    if dataclasses.is_dataclass(tp):  # a nested dataclass: a map, by the same rules as a request
        schema = RequestSchema(tp, "")  # type: ignore[arg-type]

        def check_map(v: Any, where: str) -> Any:
            return schema.build_at(v, where)
        return check_map
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):  # NamedTuple: an array
        hints = typing.get_type_hints(tp)
        items = [_checker(hints[f]) for f in tp._fields]
        required = len(tp._fields) - len(tp._field_defaults)
        shape = ", ".join(f"{f} ({_describe(hints[f])})" for f in tp._fields)

        def check_row(v: Any, where: str) -> Any:
            if type(v) not in (list, tuple) or not required <= len(v) <= len(items):
                raise _Bad(f"{where} must be an array [{shape}], got {v!r}"[:300])
            return tp(*(c(x, f"{where}.{f}") for c, x, f in zip(items, v, tp._fields)))
        return check_row
    raise TypeError(f"no wire conversion for {tp!r}")


def _wire_name(name: str) -> str:
    return name[:-2] + "_ms" if name.endswith("_s") else name


class RequestSchema:
    """Builds one request class from a map: fields by name (``x_s`` read from ``x_ms``), types checked, defaults
    applied, unknown keys ignored (newer clients may send more). Raises ``InvalidRequestError`` naming the API and
    the field."""

    __slots__ = ("cls", "api", "_fields")

    def __init__(self, cls: type, api: str) -> None:
        self.cls = cls
        self.api = api
        hints = typing.get_type_hints(cls)
        self._fields: list[tuple[str, str, _Check, Any, bool]] = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            seconds = f.name.endswith("_s")
            check = _checker(int | None if seconds and default is None else int) if seconds else _checker(hints[f.name])
            self._fields.append((f.name, _wire_name(f.name), check, default, seconds))

    def build(self, body: Any) -> Any:
        if type(body) is not dict:
            raise InvalidRequestError(f"body of {self.api!r} must be a map, got {_type_name(body)}")
        try:
            return self.build_at(body, "")
        except _Bad as exc:
            raise InvalidRequestError(f"{self.api}: {exc}") from None

    def build_at(self, body: Any, where: str) -> Any:
        """The instance a map at ``where`` describes (``where`` empty: the request itself). Raises ``_Bad``."""
        if type(body) is not dict:
            raise _Bad(f"{where} must be a map, got {_type_name(body)}")
        kwargs = {}
        for name, wire, check, default, seconds in self._fields:
            if wire not in body:
                if default is dataclasses.MISSING:
                    raise _Bad(f"missing {_field_name(where, wire)}")
                continue
            value = body[wire]
            try:
                value = check(value, "")
            except _Bad:  # again, to name the field (names are built only for a message)
                check(value, _field_name(where, wire))
                raise
            if seconds and value is not None:
                if value < 0:
                    raise _Bad(f"{_field_name(where, wire)} must be >= 0, got {value}")
                value = value / 1000
            kwargs[name] = value
        return self.cls(**kwargs)


def _field_name(where: str, wire: str) -> str:
    return f"{where}.{wire}" if where else f"field {wire!r}"  # nested: "field 'entries'[0].body"


def to_plain(value: Any) -> Any:
    """An answer as plain values: a dataclass is a map of its fields (``x_s`` becomes ``x_ms``, integer), a
    NamedTuple or tuple an array, an Enum its lowercase name; bytes and memoryviews are left as they are."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    fields = _FIELDS.get(kind)
    if fields is None and dataclasses.is_dataclass(value):
        fields = _FIELDS[kind] = tuple((f.name, _wire_name(f.name), f.name.endswith("_s"))
                                       for f in dataclasses.fields(value))
    if fields is not None:
        out = {}
        for name, wire, seconds in fields:
            v = getattr(value, name)
            if seconds:
                out[wire] = None if v is None else round(v * 1000)
            else:
                out[wire] = v if type(v) in _SCALARS else to_plain(v)
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.name.lower()
    return value


_SCALARS = frozenset({int, str, bytes, bool, float, type(None), memoryview, bytearray})
_FIELDS: dict[type, tuple[tuple[str, str, bool], ...]] = {}  # answer class -> (field, wire name, seconds?)


__all__ = ["RequestSchema", "to_plain"]
