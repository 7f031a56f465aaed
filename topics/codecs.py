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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _crc64_hex
from fastavro.schema import parse_schema, to_parsing_canonical_form

from topics.avro_check import Check, Mismatch, compile_checker
from topics.avro_scan import Scan, compile_scanner
from topics.errors import BadMagicError, ConfigError, MalformedBodyError, UnknownSchemaError

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
    scan: Scan
    check: Check

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.path.name})"


class AvroCodec:
    """Encodes and decodes the records of ``avro/`` as Avro single-object encoded bytes.

    Immutable after construction and safe to share between agents; build it once at start (it
    reads and checks every schema file) and keep it.
    """

    def __init__(
        self, schema_dir: Path = DEFAULT_SCHEMA_DIR, read_as: Mapping[str, int] | None = None
    ) -> None:
        """``read_as`` pins the version a record is decoded into (``{"ListingVerdict": 1}``):
        what a consumer built against that version does, reading bodies newer writers wrote by
        Avro schema resolution. Unpinned records decode into their latest version."""
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
        self._readers = dict(self._latest)
        for name, number in (read_as or {}).items():
            pinned = versions.get(name, {}).get(number)
            if pinned is None:
                raise ConfigError(f"read_as: no {name} v{number} under {schema_dir}")
            self._readers[name] = pinned

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
        except Mismatch as exc:
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
        read into the latest version of ``record_name``, or the one ``read_as`` pins (fields
        added since the writer's version get their default; fields the reader does not know
        are skipped).
        Raises only ``DecodeError`` subclasses for bad bytes, and ``ValueError`` for an unknown
        ``record_name`` (a programming error, not bad input).
        """
        self._latest_of(record_name)  # an unknown name is refused, whatever the bytes
        reader = self._readers[record_name]
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
        scan=compile_scanner(schema),
        check=compile_checker(schema),
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
