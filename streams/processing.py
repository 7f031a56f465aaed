"""What the join's processors see of the stream processor: one record with its place in the
log, tables as byte maps addressed by partition, and outputs. Faust provides them in production
(``streams/topology.py``); dicts and lists provide them in the in-process tests, so the handlers
run without a broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """One input record and where it was read: handlers take this instead of reading Faust's
    current event as a hidden input."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class PartitionTable(Protocol):
    """A table whose every read and write names the partition it belongs to, as a RocksDB store
    of one database per partition does: handlers say which partition they work on rather
    than leave it to the stream processor's current event."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def set(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of ``partition`` whose key starts with ``prefix``, in key order; safe to
        iterate while the caller writes and awaits."""
        ...
