"""Every record ccc-guard writes, handed to Kafka a batch at a time.

Handlers only append (``send``: no coroutine, no future per record); the agent hands a whole
batch to the producer at once (``flush``), one aiokafka record batch per topic partition, and
only then lets Faust commit past the batch's input. That replaces a Faust ``Topic.send`` or
table changelog write per record, whose futures, queue and callbacks were most of the worker's
time, with one ``send_batch`` per partition per batch.

Delivery is tracked, not awaited: ``Deliveries`` holds each batch's future until the broker
acknowledged it, and the commit path waits for all of them and refuses to commit after a
failure (``faust_adapter.wait_for_deliveries_on_flush``). Records of one topic partition keep
the order they were sent in, across flushes too: a table's changelog must replay a key's
writes in the order they were made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from streams.errors import DeliveryNotAcknowledged

# (partition, offset of the batch's last record, records in the batch) -> None
AfterDelivery = Callable[[int, int, int], None]


class BatchBuilder(Protocol):
    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes | None) -> Any:
        """None when the batch is full."""

    def record_count(self) -> int: ...


class BatchProducer(Protocol):
    """What aiokafka's ``AIOKafkaProducer`` offers for whole batches."""

    def create_batch(self) -> BatchBuilder: ...

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...


class Deliveries:
    """Batches handed to the producer and not yet acknowledged, and the first failure."""

    def __init__(self) -> None:
        self.unacked: set[asyncio.Future[Any]] = set()
        self.failures: list[BaseException] = []

    def track(self, future: asyncio.Future[Any]) -> None:
        self.unacked.add(future)
        future.add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self.unacked.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self.failures.append(future.exception())  # type: ignore[arg-type]

    def raise_failure(self) -> None:
        if self.failures:
            raise DeliveryNotAcknowledged(f"a record was not delivered: {self.failures[0]!r}")


class Outbox:
    def __init__(self, producer: Callable[[], BatchProducer], deliveries: Deliveries) -> None:
        self._producer = producer  # looked up at flush: the producer starts after the wiring
        self.deliveries = deliveries
        self._pending: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        self._after: dict[str, AfterDelivery] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return sum(len(records) for records in self._pending.values())

    def send(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        """Queue a record for ``topic``'s ``partition``; ``value`` None is a tombstone."""
        records = self._pending.get((topic, partition))
        if records is None:
            records = self._pending[(topic, partition)] = []
        records.append((key, value))

    def after_delivery(self, topic: str, callback: AfterDelivery) -> None:
        """Call ``callback`` as each batch of ``topic`` is acknowledged, in order."""
        self._after[topic] = callback

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Hand every queued record to the producer; the futures of the batches handed over.
        Serialised, so that a partition's batches reach the producer in the order queued."""
        async with self._lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return []
            producer = self._producer()
            futures: list[asyncio.Future[Any]] = []
            for (topic, partition), records in pending.items():
                after = self._after.get(topic)
                batch = producer.create_batch()
                for key, value in records:
                    if batch.append(timestamp=None, key=key, value=value) is None:
                        futures.append(await self._send(producer, batch, topic, partition, after))
                        batch = producer.create_batch()
                        batch.append(timestamp=None, key=key, value=value)
                futures.append(await self._send(producer, batch, topic, partition, after))
            return futures

    async def delivered(self) -> None:
        """Hand everything over and wait until the broker has acknowledged it, and everything
        handed over before."""
        await self.flush()
        waiting = set(self.deliveries.unacked)
        if waiting:
            await asyncio.wait(waiting)
        self.deliveries.raise_failure()

    async def _send(
        self,
        producer: BatchProducer,
        batch: BatchBuilder,
        topic: str,
        partition: int,
        after: AfterDelivery | None,
    ) -> asyncio.Future[Any]:
        count = batch.record_count()
        future = await producer.send_batch(batch, topic, partition=partition)
        self.deliveries.track(future)
        if after is not None:

            def delivered(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    after(partition, done.result().offset + count - 1, count)

            future.add_done_callback(delivered)
        return future
