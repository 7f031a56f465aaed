"""Avro codec for the wire contract kept under ``avro/``: single-object encoding, strict decode.

Every value on a ccc-guard topic is an Avro *single-object encoding*: the marker ``C3 01``, the
8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then
the Avro binary body. The fingerprint tells a reader which schema version wrote the body, so
producers and consumers can be upgraded independently: an older body is read into the latest
version of its record by Avro schema resolution.

Schemas live in one file per record per version, ``avro/<Name>.v<N>.avsc``; the highest ``N`` of
a record is the one written and the one read into. Old versions must stay in the directory for as
long as bodies they wrote can still be read (topic retention, dead letters, replays).

``decode`` is a trust boundary: whatever the bytes, it returns a record or raises a
``DecodeError`` (``BadMagicError``, ``UnknownSchemaError``, ``MalformedBodyError``). fastavro
alone is too lenient for that (a negative enum or union index reads as a Python negative index,
over-long or overflowing varints wrap silently, an ``int`` is not range checked), so every body
is first walked by a small strict scanner compiled from the writer schema, then read by fastavro.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _crc64_hex
from fastavro.schema import parse_schema, to_parsing_canonical_form

from streams.errors import BadMagicError, ConfigError, MalformedBodyError, UnknownSchemaError

__all__ = [
    "DEFAULT_SCHEMA_DIR",
    "FINGERPRINT_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "NAMESPACE",
    "AvroCodec",
]

DEFAULT_SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parents[1] / "avro"
NAMESPACE: Final = "ccc.guard"
MAGIC: Final = b"\xc3\x01"
FINGERPRINT_SIZE: Final = 8
HEADER_SIZE: Final = len(MAGIC) + FINGERPRINT_SIZE

# A version number has no leading zero, so "v1" and "v01" cannot both claim version 1.
_FILE_NAME: Final = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc")

# A scanner takes the whole value and the offset of one datum; it returns the offset just past
# that datum. It raises MalformedBodyError on bytes no conforming writer could have produced, and
# IndexError (turned into "truncated" by the caller) when it runs off the end.
_Scan = Callable[[bytes, int], int]
# A checker raises _Mismatch when a Python value cannot be written as its schema says.
_Check = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class _Version:
    """One ``<Name>.v<N>.avsc`` file, ready to read and write."""

    name: str
    version: int
    path: Path
    fingerprint: bytes
    header: bytes
    # fastavro-parsed, with logicalType keys removed so timestamps and dates stay plain ints.
    schema: dict[str, Any]
    scan: _Scan
    check: _Check

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.path.name})"


class AvroCodec:
    """Encodes and decodes the records of ``avro/`` as Avro single-object encoded bytes.

    Immutable after construction and safe to share between agents; build it once at start (it
    reads and checks every schema file) and keep it.
    """

    def __init__(self, schema_dir: Path = DEFAULT_SCHEMA_DIR) -> None:
        self._schema_dir = schema_dir
        if not schema_dir.is_dir():
            raise ConfigError(f"schema directory {schema_dir} does not exist")
        paths = sorted(schema_dir.glob("*.avsc"))
        if not paths:
            raise ConfigError(f"no *.avsc schema file under {schema_dir}")

        self._by_fingerprint: dict[bytes, _Version] = {}
        versions: dict[str, dict[int, _Version]] = {}
        for path in paths:
            loaded = _load(path)
            clash = self._by_fingerprint.get(loaded.fingerprint)
            if clash is not None:
                # The fingerprint is all a reader sees, so two files with one canonical form
                # would make the writer ambiguous (and a "new version" that only changed docs or
                # defaults is not a new wire format).
                raise ConfigError(
                    f"{path.name} and {clash.path.name} have the same canonical form "
                    f"(fingerprint {loaded.fingerprint.hex()})"
                )
            self._by_fingerprint[loaded.fingerprint] = loaded
            versions.setdefault(loaded.name, {})[loaded.version] = loaded

        self._latest: dict[str, _Version] = {
            name: by_number[max(by_number)] for name, by_number in versions.items()
        }
        _check_named_types_agree(list(self._latest.values()))

    @property
    def record_names(self) -> frozenset[str]:
        """Short names of every record the schema directory defines."""
        return frozenset(self._latest)

    def fingerprint(self, record_name: str) -> bytes:
        """The 8-byte fingerprint of the latest version of ``record_name``, as on the wire."""
        return self._latest_of(record_name).fingerprint

    def encode(self, record_name: str, record: Mapping[str, Any]) -> bytes:
        """Single-object encode ``record`` with the latest version of ``record_name``.

        Raises ``ValueError`` naming the offending field when ``record`` does not match the
        schema (missing field without default, wrong type, unknown field, unknown enum symbol).
        Logical types are not converted: timestamps are int milliseconds, dates int days.
        """
        version = self._latest_of(record_name)
        # fastavro's writer coerces silently (1.5 or True written as a long, a str written as
        # an array of its characters, a misspelt optional field dropped for its default), and
        # fastavro.validation costs ~8 us per optional field; hence a compiled checker of our own.
        try:
            version.check(record)
        except _Mismatch as exc:
            raise ValueError(f"record does not match {version.label}: {exc.describe()}") from None
        out = io.BytesIO()
        out.write(version.header)
        try:
            schemaless_writer(out, version.schema, record)
        except (TypeError, ValueError, OverflowError) as exc:  # only if the checker missed one
            raise ValueError(f"record does not match {version.label}: {exc}") from exc
        return out.getvalue()

    def decode(self, record_name: str, data: bytes) -> dict[str, Any]:
        """Decode a single-object encoded ``record_name`` into plain Python values.

        The writer schema is found by fingerprint among every version of every file; the body is
        read into the latest version of ``record_name`` (fields added since get their default).
        Raises only ``DecodeError`` subclasses for bad bytes, and ``ValueError`` for an unknown
        ``record_name`` (a programming error, not bad input).
        """
        reader = self._latest_of(record_name)
        # `not data` also catches None, which is what a consumer sees for a tombstone.
        if not data:
            raise BadMagicError("empty value: no single-object marker")
        if data[: len(MAGIC)] != MAGIC:
            raise BadMagicError(
                f"value starts with {bytes(data[: len(MAGIC)]).hex()}, "
                f"not the Avro single-object marker {MAGIC.hex()}"
            )
        if len(data) < HEADER_SIZE:
            raise UnknownSchemaError(
                f"header truncated: {len(data) - len(MAGIC)} of {FINGERPRINT_SIZE} "
                "fingerprint bytes"
            )
        fingerprint = bytes(data[len(MAGIC) : HEADER_SIZE])
        writer = self._by_fingerprint.get(fingerprint)
        if writer is None:
            raise UnknownSchemaError(
                f"writer fingerprint {fingerprint.hex()} matches no schema under {self._schema_dir}"
            )
        if writer.name != record_name:
            raise UnknownSchemaError(f"value was written as {writer.label}, not a {record_name}")

        try:
            end = writer.scan(data, HEADER_SIZE)
        except MalformedBodyError as exc:
            raise MalformedBodyError(f"{writer.label} body: {exc}") from None
        except IndexError:
            raise MalformedBodyError(f"{writer.label} body truncated") from None
        except Exception as exc:  # e.g. RecursionError on absurd nesting of a recursive type
            raise MalformedBodyError(f"{writer.label} body: {type(exc).__name__}: {exc}") from exc
        if end != len(data):
            raise MalformedBodyError(
                f"{writer.label} body followed by {len(data) - end} trailing byte(s)"
            )

        source = io.BytesIO(data)
        source.seek(HEADER_SIZE)
        try:
            # reader_schema=None when the writer is the latest version skips resolution entirely.
            value = schemaless_reader(
                source, writer.schema, None if writer is reader else reader.schema
            )
        except Exception as exc:
            # What the scanner lets through and fastavro still rejects: invalid UTF-8, or a
            # writer version the latest one cannot resolve (e.g. an enum symbol it dropped).
            raise MalformedBodyError(
                f"{writer.label} body unreadable as {reader.label}: {type(exc).__name__}: {exc}"
            ) from exc
        if source.tell() != len(data):  # the scanner and fastavro disagree: trust neither
            raise MalformedBodyError(f"{writer.label} body length is ambiguous")
        return cast(dict[str, Any], value)

    def _latest_of(self, record_name: str) -> _Version:
        version = self._latest.get(record_name)
        if version is None:
            known = ", ".join(sorted(self._latest))
            raise ValueError(f"unknown record {record_name!r}; {self._schema_dir} has: {known}")
        return version


def _load(path: Path) -> _Version:
    """Read, check and prepare one schema file; every problem is a ConfigError naming it."""
    match = _FILE_NAME.fullmatch(path.name)
    if match is None:
        raise ConfigError(f"{path}: schema files are named <Name>.v<N>.avsc, e.g. Foo.v1.avsc")
    name, version = match["name"], int(match["version"])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise ConfigError(f"{path}: the top-level schema must be a record")
    declared = str(raw.get("name"))
    full_name = declared if "." in declared else f"{raw.get('namespace')}.{declared}"
    if full_name != f"{NAMESPACE}.{name}":
        raise ConfigError(f"{path}: declares {full_name}, its file name says {NAMESPACE}.{name}")

    try:
        parse_schema(raw)  # validates the file as written, logical types included
        canonical = to_parsing_canonical_form(raw)
        plain = _without_logical_types(raw)
        schema = cast(dict[str, Any], parse_schema(plain))
        plain_canonical = to_parsing_canonical_form(plain)
    except Exception as exc:  # fastavro raises SchemaParseError, but also KeyError, TypeError...
        raise ConfigError(f"{path}: not a valid Avro schema: {type(exc).__name__}: {exc}") from exc
    if plain_canonical != canonical:
        # The codec reads with logicalType removed; that is only sound while the Parsing
        # Canonical Form (and so the fingerprint) ignores logical types, as the spec says.
        raise ConfigError(f"{path}: removing logicalType changed the canonical form")

    fingerprint = bytes.fromhex(_crc64_hex(canonical, "CRC-64-AVRO"))
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise ConfigError(f"{path}: fingerprint {fingerprint.hex()} is not 8 bytes")
    return _Version(
        name=name,
        version=version,
        path=path,
        fingerprint=fingerprint,
        header=MAGIC + fingerprint,
        schema=schema,
        scan=_compile_scanner(schema),
        check=_compile_checker(schema),
    )


def _without_logical_types(node: Any) -> Any:
    """A deep copy of a schema with every ``logicalType`` key removed.

    ``default`` values are copied untouched: they are data, and a map default may legitimately
    hold a "logicalType" key.
    """
    if isinstance(node, dict):
        return {
            key: value if key == "default" else _without_logical_types(value)
            for key, value in node.items()
            if key != "logicalType"
        }
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


def _check_named_types_agree(latest: list[_Version]) -> None:
    """One full name, one definition across the latest version of every record.

    Each file is self-contained, so two of them may both define the same enum, say; if the two
    definitions differ, the contract means two different things by one name.
    """
    seen: dict[str, tuple[Any, _Version]] = {}
    for version in latest:
        for full_name, definition in version.schema["__named_schemas"].items():
            shape = _shape(definition, top=True)
            first = seen.setdefault(full_name, (shape, version))
            if first[0] != shape:
                raise ConfigError(
                    f"{version.path.name} and {first[1].path.name} define {full_name} differently"
                )


def _shape(node: Any, *, top: bool = False) -> Any:
    """The parts of a parsed schema the canonical form keeps; nested named types by name only."""
    if isinstance(node, list):
        return [_shape(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    kind = node["type"]
    if kind in ("record", "error", "enum", "fixed") and not top:
        return node["name"]
    if kind in ("record", "error"):
        fields = [(field["name"], _shape(field["type"])) for field in node["fields"]]
        return (kind, node["name"], fields)
    if kind == "enum":
        return (kind, node["name"], list(node["symbols"]))
    if kind == "fixed":
        return (kind, node["name"], node["size"])
    if kind == "array":
        return (kind, _shape(node["items"]))
    if kind == "map":
        return (kind, _shape(node["values"]))
    return _shape(kind)


# --- strict scanner ----------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, bits: int) -> tuple[int, int]:
    """Read a zig-zag varint of at most ``bits`` bits; return (value, offset after it).

    Limits follow the Java reference decoder: an int takes at most 5 bytes, a long 10, and the
    value must fit; fastavro would keep reading and wrap or grow the value instead.
    """
    byte = buf[pos]
    if byte < 0x80:  # one byte: every small number, every enum and union index
        return (byte >> 1) ^ -(byte & 1), pos + 1
    raw = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= bits:
            raise MalformedBodyError(f"varint longer than {(bits + 6) // 7} bytes at byte {pos}")
    if raw >> bits:
        raise MalformedBodyError(f"varint overflows {bits} bits at byte {pos}")
    return (raw >> 1) ^ -(raw & 1), pos


def _scan_null(buf: bytes, pos: int) -> int:
    return pos


def _scan_boolean(buf: bytes, pos: int) -> int:
    if buf[pos] > 1:
        raise MalformedBodyError(f"boolean byte {buf[pos]} at byte {pos} is neither 0 nor 1")
    return pos + 1


def _scan_int(buf: bytes, pos: int) -> int:
    return _varint(buf, pos, 32)[1]


def _scan_long(buf: bytes, pos: int) -> int:
    return _varint(buf, pos, 64)[1]


def _scan_float(buf: bytes, pos: int) -> int:
    return _scan_fixed_size(buf, pos, 4)


def _scan_double(buf: bytes, pos: int) -> int:
    return _scan_fixed_size(buf, pos, 8)


def _scan_fixed_size(buf: bytes, pos: int, size: int) -> int:
    end = pos + size
    if end > len(buf):
        raise IndexError(end)
    return end


def _scan_bytes(buf: bytes, pos: int) -> int:
    # Strings too: their UTF-8 is checked by fastavro when it decodes them.
    size, pos = _varint(buf, pos, 64)
    if size < 0:
        raise MalformedBodyError(f"negative length {size} at byte {pos}")
    end = pos + size
    if end > len(buf):
        raise IndexError(end)
    return end


_PRIMITIVE_SCANS: Final[dict[str, _Scan]] = {
    "null": _scan_null,
    "boolean": _scan_boolean,
    "int": _scan_int,
    "long": _scan_long,
    "float": _scan_float,
    "double": _scan_double,
    "bytes": _scan_bytes,
    "string": _scan_bytes,
}


def _compile_scanner(schema: dict[str, Any]) -> _Scan:
    """Build a strict scanner for a fastavro-parsed schema (full names, references by name)."""
    compiled: dict[str, _Scan] = {}
    named: dict[str, Any] = schema["__named_schemas"]

    def build(node: Any) -> _Scan:
        if isinstance(node, list):
            return _union_scanner([build(branch) for branch in node])
        if isinstance(node, str):
            if node in _PRIMITIVE_SCANS:
                return _PRIMITIVE_SCANS[node]
            if node not in compiled:
                build(named[node])
            return compiled[node]
        kind = node["type"]
        if kind in _PRIMITIVE_SCANS:
            return _PRIMITIVE_SCANS[kind]
        if kind in ("record", "error"):
            fields: list[_Scan] = []
            scan = _record_scanner(fields)
            # Registered before its fields are built so that a recursive reference finds it.
            compiled[node["name"]] = scan
            fields.extend(build(field["type"]) for field in node["fields"])
            return scan
        if kind == "enum":
            scan = _enum_scanner(node["name"], len(node["symbols"]))
        elif kind == "fixed":
            scan = _fixed_scanner(int(node["size"]))
        elif kind == "array":
            scan = _blocks_scanner(build(node["items"]))
        elif kind == "map":
            scan = _blocks_scanner(_pair_scanner(build(node["values"])))
        else:
            raise ConfigError(f"unsupported Avro type {kind!r}")
        if kind in ("enum", "fixed"):
            compiled[node["name"]] = scan
        return scan

    return build(schema)


def _record_scanner(fields: list[_Scan]) -> _Scan:
    def scan(buf: bytes, pos: int) -> int:
        for field in fields:
            pos = field(buf, pos)
        return pos

    return scan


def _fixed_scanner(size: int) -> _Scan:
    def scan(buf: bytes, pos: int) -> int:
        return _scan_fixed_size(buf, pos, size)

    return scan


def _enum_scanner(name: str, size: int) -> _Scan:
    def scan(buf: bytes, pos: int) -> int:
        index, end = _varint(buf, pos, 32)
        if not 0 <= index < size:
            raise MalformedBodyError(f"{name} index {index} at byte {pos} not in 0..{size - 1}")
        return end

    return scan


def _union_scanner(branches: list[_Scan]) -> _Scan:
    size = len(branches)

    def scan(buf: bytes, pos: int) -> int:
        index, end = _varint(buf, pos, 32)
        if not 0 <= index < size:
            raise MalformedBodyError(f"union index {index} at byte {pos} not in 0..{size - 1}")
        return branches[index](buf, end)

    return scan


def _pair_scanner(value: _Scan) -> _Scan:
    def scan(buf: bytes, pos: int) -> int:
        return value(buf, _scan_bytes(buf, pos))

    return scan


def _blocks_scanner(item: _Scan) -> _Scan:
    """Arrays and maps: blocks of ``count`` items, a zero count ends them.

    A negative count means a byte size follows (writers that buffer blocks emit it so readers
    can skip); it is checked against what the items really took.
    """

    def scan(buf: bytes, pos: int) -> int:
        while True:
            count, pos = _varint(buf, pos, 64)
            if count == 0:
                return pos
            size = -1
            if count < 0:
                count = -count
                size, pos = _varint(buf, pos, 64)
                if size < 0:
                    raise MalformedBodyError(f"negative block size {size} at byte {pos}")
            # Every item of our contract takes at least one byte, so a count beyond the bytes
            # left is a lie; refusing it early keeps a forged count from pinning the CPU (or,
            # for zero-width items, fastavro's memory) on one message.
            if count > len(buf) - pos:
                raise MalformedBodyError(
                    f"block of {count} items at byte {pos} but {len(buf) - pos} bytes left"
                )
            start = pos
            for _ in range(count):
                pos = item(buf, pos)
            if size >= 0 and pos - start != size:
                raise MalformedBodyError(
                    f"block at byte {start} declares {size} bytes, its items take {pos - start}"
                )

    return scan


# --- encode-side checker -----------------------------------------------------------------------


class _Mismatch(ValueError):
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


def _int_checker(kind: str, bits: int) -> _Check:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: Any) -> None:
        # type() rather than isinstance(): bool is an int subclass, and True is no timestamp.
        if type(value) is not int:
            raise _Mismatch(f"expected {kind}, got {_describe(value)}")
        if not low <= value <= high:
            raise _Mismatch(f"{value} out of range for {kind}")

    return check


def _type_checker(kind: str, accepted: tuple[type, ...]) -> _Check:
    def check(value: Any) -> None:
        if not isinstance(value, accepted) or isinstance(value, bool):
            raise _Mismatch(f"expected {kind}, got {_describe(value)}")

    return check


def _check_null(value: Any) -> None:
    if value is not None:
        raise _Mismatch(f"expected null, got {_describe(value)}")


def _check_boolean(value: Any) -> None:
    if type(value) is not bool:
        raise _Mismatch(f"expected boolean, got {_describe(value)}")


_BYTES_LIKE: Final = (bytes, bytearray)  # not memoryview: fastavro cannot put one in a union

_PRIMITIVE_CHECKS: Final[dict[str, _Check]] = {
    "null": _check_null,
    "boolean": _check_boolean,
    "int": _int_checker("int", 32),
    "long": _int_checker("long", 64),
    "float": _type_checker("float", (int, float)),
    "double": _type_checker("double", (int, float)),
    "bytes": _type_checker("bytes", _BYTES_LIKE),
    "string": _type_checker("string", (str,)),
}


def _compile_checker(schema: dict[str, Any]) -> _Check:
    """Build a checker for a fastavro-parsed schema, mirroring ``_compile_scanner``."""
    compiled: dict[str, _Check] = {}
    named: dict[str, Any] = schema["__named_schemas"]

    def build(node: Any) -> _Check:
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
            fields: list[tuple[str, bool, _Check]] = []
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


def _record_checker(name: str, fields: list[tuple[str, bool, _Check]], names: set[str]) -> _Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _Mismatch(f"expected a {name} mapping, got {_describe(value)}")
        for field_name, has_default, check_field in fields:
            if field_name in value:
                try:
                    check_field(value[field_name])
                except _Mismatch as exc:
                    exc.path.append(f".{field_name}")
                    raise
            elif not has_default:
                raise _Mismatch(f"field {field_name!r} missing and has no default")
        if not names.issuperset(value):
            # A misspelt optional field would otherwise go out as its default, silently.
            unknown = sorted(map(str, set(value) - names))
            raise _Mismatch(f"{name} has no field(s) {', '.join(unknown)}")

    return check


def _enum_checker(name: str, symbols: list[str]) -> _Check:
    known = frozenset(symbols)

    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in known:
            raise _Mismatch(f"expected a {name} symbol ({', '.join(symbols)}), got {value!r}")

    return check


def _fixed_checker(size: int) -> _Check:
    def check(value: Any) -> None:
        if not isinstance(value, _BYTES_LIKE) or len(value) != size:
            raise _Mismatch(f"expected {size} bytes, got {_describe(value)}")

    return check


def _array_checker(item: _Check) -> _Check:
    def check(value: Any) -> None:
        # list or tuple only: fastavro would happily write a str as an array of its characters.
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected an array (list), got {_describe(value)}")
        for index, element in enumerate(value):
            try:
                item(element)
            except _Mismatch as exc:
                exc.path.append(f"[{index}]")
                raise

    return check


def _map_checker(values: _Check) -> _Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _Mismatch(f"expected a map (mapping), got {_describe(value)}")
        for key, element in value.items():
            if not isinstance(key, str):
                raise _Mismatch(f"map key {key!r} is not a string")
            try:
                values(element)
            except _Mismatch as exc:
                exc.path.append(f"[{key!r}]")
                raise

    return check


def _union_checker(branches: list[_Check]) -> _Check:
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
            except _Mismatch as exc:
                reasons.append(exc.describe())
            else:
                return
        raise _Mismatch(f"matches no branch of the union ({'; '.join(reasons)})")

    return check
