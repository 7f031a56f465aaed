"""The one place that touches Faust internals, and why.

Faust tables are key-value maps with no range or prefix scan. The claim index is stored as one
key per (certificate, listing) pair so that a new claim costs O(1) however many listings claim
the certificate; a re-check must then find every key starting with the certificate's prefix.
Faust's RocksDB store keeps one database per partition (``_db_for_partition``), ordered by key,
so a seek gives exactly that range. The in-memory store (tests, development) has no order and is
scanned in full: fine for thousands of claims, not for production sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore


def iter_keys_with_prefix(table: Any, partition: int, prefix: bytes) -> Iterator[bytes]:
    """Keys of ``table`` in ``partition`` that start with ``prefix``, without loading values
    into a list: the caller streams them."""
    store = table.data
    if isinstance(store, RocksDBStore):
        iterator = store._db_for_partition(partition).iter()
        iterator.seek(prefix)
        while iterator.valid():
            key: bytes = iterator.key()
            if not key.startswith(prefix):
                return
            yield key
            iterator.next()
    elif isinstance(store, MemoryStore):
        # Copy the matching keys first: the dict may change while the caller awaits sends.
        yield from [k for k in store.data if isinstance(k, bytes) and k.startswith(prefix)]
    else:  # pragma: no cover - only the two stores above are configurable
        raise TypeError(f"no prefix scan for store {type(store).__name__}")


def estimate_key_count(table: Any) -> int:
    """Keys in the partitions this worker is active for: RocksDB's own estimate (cheap, not
    exact), or a count of the in-memory store."""
    store = table.data
    if isinstance(store, RocksDBStore):
        return sum(
            db.property_int_value("rocksdb.estimate-num-keys") or 0
            for db in store._dbs_for_actives()
        )
    return len(store.data)
