"""The outbox: records queued by handlers go to the producer as one batch per topic partition,
in the order queued, and their deliveries are tracked for the commit path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.errors import DeliveryNotAcknowledged
from streams.outbox import Deliveries, Outbox


@dataclass
class Batch:
    capacity: int
    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)

    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes | None) -> Any:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


@dataclass
class Delivered:
    offset: int


class Producer:
    """Appends each batch to its partition's log; the test settles the futures."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.gate: asyncio.Event | None = None  # holds the next send until set
        self.logs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
        self.sent: list[tuple[str, int, int, asyncio.Future[Any]]] = []  # (..., base offset, ...)

    def create_batch(self) -> Batch:
        return Batch(self.capacity)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()  # as aiokafka does while the partition's last batch drains
        log = self.logs.setdefault((topic, partition), [])
        base = len(log)
        log.extend(batch.records)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, base, future))
        return future

    def ack_all(self) -> None:
        for _, _, base, future in self.sent:
            if not future.done():
                future.set_result(Delivered(base))


def outbox(producer: Producer) -> Outbox:
    return Outbox(lambda: producer, Deliveries())


def test_one_batch_per_partition_in_the_order_queued() -> None:
    async def run() -> None:
        producer = Producer()
        box = outbox(producer)
        for n in range(5):
            box.send("verdicts", n % 2, f"k{n}".encode(), f"v{n}".encode())
        box.send("changelog", 0, b"gone", None)  # a tombstone
        assert len(box) == 6
        futures = await box.flush()
        assert len(futures) == 3 and len(box) == 0
        assert producer.logs[("verdicts", 0)] == [(b"k0", b"v0"), (b"k2", b"v2"), (b"k4", b"v4")]
        assert producer.logs[("verdicts", 1)] == [(b"k1", b"v1"), (b"k3", b"v3")]
        assert producer.logs[("changelog", 0)] == [(b"gone", None)]
        assert await box.flush() == []  # nothing queued, nothing sent

    asyncio.run(run())


def test_a_full_batch_is_sent_and_the_rest_follows_in_order() -> None:
    async def run() -> None:
        producer = Producer(capacity=2)
        box = outbox(producer)
        for n in range(5):
            box.send("t", 0, None, bytes([n]))
        futures = await box.flush()
        assert len(futures) == 3
        assert [value for _, value in producer.logs[("t", 0)]] == [bytes([n]) for n in range(5)]

    asyncio.run(run())


def test_concurrent_flushes_keep_a_partitions_order() -> None:
    async def run() -> None:
        producer = Producer()
        box = outbox(producer)
        producer.gate = gate = asyncio.Event()
        box.send("changelog", 3, b"key", b"first")
        first = asyncio.create_task(box.flush())
        await asyncio.sleep(0)  # the first flush now waits inside send_batch
        box.send("changelog", 3, b"key", b"second")
        second = asyncio.create_task(box.flush())
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
        assert producer.logs[("changelog", 3)] == [(b"key", b"first"), (b"key", b"second")]

    asyncio.run(run())


def test_after_delivery_gets_each_batchs_last_offset_and_nothing_for_a_failure() -> None:
    async def run() -> None:
        producer = Producer(capacity=2)
        box = outbox(producer)
        seen: list[tuple[int, int, int]] = []
        box.after_delivery("changelog", lambda *delivered: seen.append(delivered))
        for n in range(3):
            box.send("changelog", 1, b"k", bytes([n]))
        box.send("verdicts", 1, b"k", b"v")  # another topic: no callback
        await box.flush()
        producer.ack_all()
        await asyncio.sleep(0)
        assert seen == [(1, 1, 2), (1, 2, 1)]  # offsets 0-1, then 2
        box.send("changelog", 1, b"k", b"lost")
        [failed] = await box.flush()
        producer.sent[-1][3].set_exception(RuntimeError("not leader"))
        await asyncio.sleep(0)
        assert failed.done() and seen == [(1, 1, 2), (1, 2, 1)]

    asyncio.run(run())


def test_delivered_waits_for_the_acks_and_raises_after_a_failure() -> None:
    async def run() -> None:
        producer = Producer()
        box = outbox(producer)
        box.send("updates", 0, b"cert", b"trigger")
        waiting = asyncio.create_task(box.delivered())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # handed over, not acknowledged yet
        producer.ack_all()
        await asyncio.wait_for(waiting, 1)
        assert not box.deliveries.unacked
        box.send("updates", 0, b"cert", b"trigger")
        waiting = asyncio.create_task(box.delivered())
        await asyncio.sleep(0.01)
        producer.sent[-1][3].set_exception(RuntimeError("broker said no"))
        with pytest.raises(DeliveryNotAcknowledged, match="broker said no"):
            await asyncio.wait_for(waiting, 1)

    asyncio.run(run())
