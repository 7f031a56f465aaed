"""Staged table writes: read through until the batch commits, then applied in order."""

from __future__ import annotations

from collections.abc import Iterator

from streams.staged import StagedTable


class Store:
    """An applied store: a dict per partition, and the changelog its applies queue."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.changelog: list[tuple[int, bytes, bytes | None]] = []

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(
            sorted(kv for kv in self.data.get(partition, {}).items() if kv[0].startswith(prefix))
        )

    def apply(self, partition: int, key: bytes, value: bytes | None) -> None:
        part = self.data.setdefault(partition, {})
        if value is None:
            part.pop(key, None)
        else:
            part[key] = value
        self.changelog.append((partition, key, value))


def test_writes_are_read_through_and_reach_the_store_at_commit() -> None:
    store = Store()
    store.apply(1, b"L-1", b"old")
    table = StagedTable(store)
    table.set(1, b"L-1", b"new")
    table.set(1, b"L-2", b"added")
    table.delete(1, b"L-1")
    assert table.get(1, b"L-1") is None and table.get(1, b"L-2") == b"added"
    assert table.get(2, b"L-2") is None  # another partition
    assert store.get(1, b"L-1") == b"old" and len(store.changelog) == 1  # nothing applied yet
    table.commit()
    assert store.data[1] == {b"L-2": b"added"}
    assert store.changelog[1:] == [(1, b"L-1", None), (1, b"L-2", b"added")]
    assert len(table) == 2  # still read here until the store has them
    table.settle()
    assert len(table) == 0 and table.get(1, b"L-2") == b"added"


def test_a_scan_merges_staged_writes_over_the_store_in_key_order() -> None:
    store = Store()
    prefix = b"2017010907948411\x003\x00"
    for lid in (b"A", b"C", b"E"):
        store.apply(3, prefix + lid, b"1")
    store.apply(3, b"2017010907948411\x004\x00B", b"1")  # another listing partition's claim
    table = StagedTable(store)
    table.set(3, prefix + b"B", b"1")
    table.delete(3, prefix + b"C")
    table.set(3, prefix + b"F", b"1")
    table.set(3, prefix + b"E", b"2")
    seen = []
    for key, value in table.scan(3, prefix):
        seen.append((key[len(prefix) :], value))
        table.delete(3, prefix + b"F")  # writing while scanning: the scan keeps its copy
    assert seen == [(b"A", b"1"), (b"B", b"1"), (b"E", b"2"), (b"F", b"1")]
