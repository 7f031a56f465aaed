"""Encode-side checker: refuses a Python value that does not fit its Avro schema, with the path
of the offending field.

fastavro's writer coerces silently (``1.5`` or ``True`` written as a long, a ``str`` as an array
of characters, misspelt keys dropped for defaults); ``fastavro.validation`` catches most of it
but costs several times more than this compiled checker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from topics.errors import ConfigError

Check = Callable[[Any], None]


class Mismatch(ValueError):
    """A value that does not fit its schema; ``path`` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def describe(self) -> str:
        where = "".join(reversed(self.path)).lstrip(".")
        return f"{where}: {self.reason}" if where else self.reason


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _int_checker(kind: str, bits: int) -> Check:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: Any) -> None:
        # type() rather than isinstance(): bool is an int subclass, and True is no timestamp.
        if type(value) is not int:
            raise Mismatch(f"expected {kind}, got {_describe(value)}")
        if not low <= value <= high:
            raise Mismatch(f"{value} out of range for {kind}")

    return check


def _type_checker(kind: str, accepted: tuple[type, ...]) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, accepted) or isinstance(value, bool):
            raise Mismatch(f"expected {kind}, got {_describe(value)}")

    return check


def _check_null(value: Any) -> None:
    if value is not None:
        raise Mismatch(f"expected null, got {_describe(value)}")


def _check_boolean(value: Any) -> None:
    if type(value) is not bool:
        raise Mismatch(f"expected boolean, got {_describe(value)}")


_BYTES_LIKE: Final = (bytes, bytearray)  # not memoryview: fastavro cannot put one in a union

_PRIMITIVE_CHECKS: Final[dict[str, Check]] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _int_checker("int", 32),
    "long": _int_checker("long", 64),
    "float": _type_checker("float", (int, float)),
    "double": _type_checker("double", (int, float)),
    "bytes": _type_checker("bytes", _BYTES_LIKE),
    "string": _type_checker("string", (str,)),
}


def compile_checker(schema: dict[str, Any]) -> Check:
    """Build a checker for a fastavro-parsed schema, mirroring ``_compile_scanner``."""
    compiled: dict[str, Check] = {}
    named: dict[str, Any] = schema["__named_schemas"]

    def build(node: Any) -> Check:
        if isinstance(node, list):
            return _union_checker([build(branch) for branch in node])
        if isinstance(node, str):
            if node in _PRIMITIVE_CHECKS:
                return _PRIMITIVE_CHECKS[node]
            if node not in compiled:
                build(named[node])
            return compiled[node]
        kind = node["type"]
        if kind in _PRIMITIVE_CHECKS:
            return _PRIMITIVE_CHECKS[kind]
        if kind in ("record", "error"):
            fields: list[tuple[str, bool, Check]] = []
            names: set[str] = set()
            check = _record_checker(node["name"], fields, names)
            compiled[node["name"]] = check  # before the fields, for recursive references
            for field in node["fields"]:
                fields.append((field["name"], "default" in field, build(field["type"])))
                names.add(field["name"])
            return check
        if kind == "enum":
            check = _enum_checker(node["name"], node["symbols"])
        elif kind == "fixed":
            check = _fixed_checker(int(node["size"]))
        elif kind == "array":
            check = _array_checker(build(node["items"]))
        elif kind == "map":
            check = _map_checker(build(node["values"]))
        else:
            raise ConfigError(f"unsupported Avro type {kind!r}")
        if kind in ("enum", "fixed"):
            compiled[node["name"]] = check
        return check

    return build(schema)


def _record_checker(name: str, fields: list[tuple[str, bool, Check]], names: set[str]) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(f"expected a {name} mapping, got {_describe(value)}")
        for field_name, has_default, check_field in fields:
            if field_name in value:
                try:
                    check_field(value[field_name])
                except Mismatch as exc:
                    exc.path.append(f".{field_name}")
                    raise
            elif not has_default:
                raise Mismatch(f"field {field_name!r} missing and has no default")
        if not names.issuperset(value):
            # A misspelt optional field would otherwise go out as its default, silently.
            unknown = sorted(map(str, set(value) - names))
            raise Mismatch(f"{name} has no field(s) {', '.join(unknown)}")

    return check


def _enum_checker(name: str, symbols: list[str]) -> Check:
    known = frozenset(symbols)

    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in known:
            raise Mismatch(f"expected a {name} symbol ({', '.join(symbols)}), got {value!r}")

    return check


def _fixed_checker(size: int) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, _BYTES_LIKE) or len(value) != size:
            raise Mismatch(f"expected {size} bytes, got {_describe(value)}")

    return check


def _array_checker(item: Check) -> Check:
    def check(value: Any) -> None:
        # list or tuple only: fastavro would happily write a str as an array of its characters.
        if not isinstance(value, (list, tuple)):
            raise Mismatch(f"expected an array (list), got {_describe(value)}")
        for index, element in enumerate(value):
            try:
                item(element)
            except Mismatch as exc:
                exc.path.append(f"[{index}]")
                raise

    return check


def _map_checker(values: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(f"expected a map (mapping), got {_describe(value)}")
        for key, element in value.items():
            if not isinstance(key, str):
                raise Mismatch(f"map key {key!r} is not a string")
            try:
                values(element)
            except Mismatch as exc:
                exc.path.append(f"[{key!r}]")
                raise

    return check


def _union_checker(branches: list[Check]) -> Check:
    if len(branches) == 2 and branches[0] is _check_null:
        # The optional-field idiom ["null", T]: one branch to try, and T's own error is the
        # clearest message.
        other = branches[1]

        def check_optional(value: Any) -> None:
            if value is not None:
                other(value)

        return check_optional

    def check(value: Any) -> None:
        reasons = []
        for branch in branches:
            try:
                branch(value)
            except Mismatch as exc:
                reasons.append(exc.describe())
            else:
                return
        raise Mismatch(f"matches no branch of the union ({'; '.join(reasons)})")

    return check
