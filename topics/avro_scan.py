"""Strict Avro binary scanner: walks a body as its writer schema says and refuses bytes no
conforming writer could produce, before fastavro reads them.

fastavro alone is too lenient for a trust boundary: a negative enum or union index reads as a
Python negative index, over-long or overflowing varints wrap silently, an ``int`` is not range
checked. A scanner takes the whole value and the offset of one datum and returns the offset just
past it; it raises ``MalformedBodyError`` on impossible bytes and ``IndexError`` (the caller's
"truncated") when it runs off the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from topics.errors import ConfigError, MalformedBodyError

Scan = Callable[[bytes, int], int]


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


_PRIMITIVE_SCANS: Final[dict[str, Scan]] = {
    "null": _scan_null,
    "boolean": _scan_boolean,
    "int": _scan_int,
    "long": _scan_long,
    "float": _scan_float,
    "double": _scan_double,
    "bytes": _scan_bytes,
    "string": _scan_bytes,
}


def compile_scanner(schema: dict[str, Any]) -> Scan:
    """Build a strict scanner for a fastavro-parsed schema (full names, references by name)."""
    compiled: dict[str, Scan] = {}
    named: dict[str, Any] = schema["__named_schemas"]

    def build(node: Any) -> Scan:
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
            fields: list[Scan] = []
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


def _record_scanner(fields: list[Scan]) -> Scan:
    def scan(buf: bytes, pos: int) -> int:
        for field in fields:
            pos = field(buf, pos)
        return pos

    return scan


def _fixed_scanner(size: int) -> Scan:
    def scan(buf: bytes, pos: int) -> int:
        return _scan_fixed_size(buf, pos, size)

    return scan


def _enum_scanner(name: str, size: int) -> Scan:
    def scan(buf: bytes, pos: int) -> int:
        index, end = _varint(buf, pos, 32)
        if not 0 <= index < size:
            raise MalformedBodyError(f"{name} index {index} at byte {pos} not in 0..{size - 1}")
        return end

    return scan


def _union_scanner(branches: list[Scan]) -> Scan:
    size = len(branches)

    def scan(buf: bytes, pos: int) -> int:
        index, end = _varint(buf, pos, 32)
        if not 0 <= index < size:
            raise MalformedBodyError(f"union index {index} at byte {pos} not in 0..{size - 1}")
        return branches[index](buf, end)

    return scan


def _pair_scanner(value: Scan) -> Scan:
    def scan(buf: bytes, pos: int) -> int:
        return value(buf, _scan_bytes(buf, pos))

    return scan


def _blocks_scanner(item: Scan) -> Scan:
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
