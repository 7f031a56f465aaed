"""A table whose writes wait for the batch's outputs: state never gets ahead of what was said.

At-least-once needs the state a worker keeps, on disk and in the changelog, to be no newer than
the outputs it has delivered: a state that already says "decided" while its verdict died with a
crash makes the replay find nothing to decide, and the verdict is lost (found by the kill test
once agents took events in batches, which widened the window from one event to a whole batch).
So a batch's writes are staged: the batch's handlers read through them, and they reach the
store and its changelog (``commit``) only once every output of the batch is acknowledged. A
crash before that replays the batch over the state before it, which decides it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class AppliedStore(Protocol):
    """The state as committed: a store with its changelog."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def apply(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write (``value`` None: delete) to the store and queue the changelog record."""


_SEPARATOR = b"\x00"


def _group(key: bytes) -> bytes:
    """A key up to its last separator: the prefix every scan of the join asks for (all claims
    of a certificate on a partition, all subscriptions of a certificate)."""
    return key[: key.rfind(_SEPARATOR) + 1]


class StagedTable:
    """A ``processing.PartitionTable`` over an ``AppliedStore``, its writes staged until
    ``commit``."""

    def __init__(self, store: AppliedStore) -> None:
        self._store = store
        self._staged: dict[tuple[int, bytes], bytes | None] = {}  # None: deleted
        self._groups: dict[tuple[int, bytes], set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._staged)

    def get(self, partition: int, key: bytes) -> bytes | None:
        if (partition, key) in self._staged:
            return self._staged[(partition, key)]
        return self._store.get(partition, key)

    def set(self, partition: int, key: bytes, value: bytes) -> None:
        self._stage(partition, key, value)

    def delete(self, partition: int, key: bytes) -> None:
        self._stage(partition, key, None)

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The store's range with the staged writes over it, in key order; the staged part is
        copied first, so the caller may write while it iterates. A prefix that ends in the
        separator finds the staged keys whose last separator ends it (the join's scans), any
        other prefix every staged key it starts."""
        staged = self._staged_with(partition, prefix)
        if not staged:
            yield from self._store.scan(partition, prefix)
            return
        pending = iter(staged)
        next_staged = next(pending, None)
        for key, value in self._store.scan(partition, prefix):
            while next_staged is not None and next_staged[0] < key:
                if next_staged[1] is not None:
                    yield next_staged  # type: ignore[misc]
                next_staged = next(pending, None)
            if next_staged is not None and next_staged[0] == key:
                if next_staged[1] is not None:
                    yield next_staged  # type: ignore[misc]
                next_staged = next(pending, None)
            else:
                yield key, value
        while next_staged is not None:
            if next_staged[1] is not None:
                yield next_staged  # type: ignore[misc]
            next_staged = next(pending, None)

    def commit(self) -> None:
        """The batch's outputs are acknowledged: its writes go to the store, in the order first
        staged. They stay readable here until ``settle``: the store may take them only once
        its changelog has them."""
        for (partition, key), value in self._staged.items():
            self._store.apply(partition, key, value)

    def settle(self) -> None:
        """The store holds every committed write."""
        self._staged, self._groups = {}, {}

    def _stage(self, partition: int, key: bytes, value: bytes | None) -> None:
        self._staged[(partition, key)] = value
        group = (partition, _group(key))
        keys = self._groups.get(group)
        if keys is None:
            keys = self._groups[group] = set()
        keys.add(key)

    def _staged_with(self, partition: int, prefix: bytes) -> list[tuple[bytes, bytes | None]]:
        keys: Iterable[bytes]
        if prefix.endswith(_SEPARATOR):
            keys = self._groups.get((partition, prefix), ())
        else:
            keys = [k for (p, k) in self._staged if p == partition and k.startswith(prefix)]
        return sorted((key, self._staged[(partition, key)]) for key in keys)
