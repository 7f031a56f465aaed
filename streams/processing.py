"""What the join's processors see of the stream processor: one record with its place in the
log, tables as byte maps, and outputs. Faust provides them in production (``streams/topology.py``);
plain dicts and lists provide them in the in-process tests, so the handlers run without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Record:
    """One input record and where it was read: handlers take this instead of reading Faust's
    current event as a hidden input."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


# A table of the partition being processed: Faust's tables are mutable mappings, and so is a
# dict in the in-process tests.
Table = MutableMapping[bytes, bytes]


# (table, partition, prefix) -> the (key, value) pairs of that partition whose key starts with
# the prefix, in key order; safe to iterate while the caller writes and awaits.
PrefixScan = Callable[[Any, int, bytes], Iterator[tuple[bytes, bytes]]]
