"""The two fixes to Faust's commit path, on stand-ins for the Faust objects they wrap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.faust_adapter import ProcessedAcks, wait_for_changelog_on_flush


@dataclass
class Consumer:
    acked: list[int] = field(default_factory=list)

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass(frozen=True)
class Message:
    tp: str
    offset: int


@dataclass
class App:
    consumer: Any = field(default_factory=Consumer)
    producer: Any = None


def test_only_events_the_agent_finished_are_acked() -> None:
    app, acks = App(), ProcessedAcks()
    acks.install(app)
    finished, skipped = Message("in-0", 1), Message("in-0", 2)
    acks.finished(finished)
    # Faust acks both as its stream moves on; the skipped one was never processed.
    assert app.consumer.ack(finished) is True
    assert app.consumer.ack(skipped) is False
    assert app.consumer.acked == [1]
    # Read again after the rebalance and finished this time: acked then.
    acks.finished(Message("in-0", 2))
    assert app.consumer.ack(Message("in-0", 2)) is True
    assert app.consumer.acked == [1, 2]


class Buffer:
    """Faust's ProducerBuffer as far as the fix sees it: ``put`` queues, ``flush`` may return
    before what was queued is acknowledged (as Faust's does after 0.1 s without progress)."""

    def __init__(self) -> None:
        self.queued: list[asyncio.Future[Any]] = []
        self.should_stop = False

    def put(self, fut: asyncio.Future[Any]) -> None:
        self.queued.append(fut)

    async def flush(self) -> None:
        return None


@dataclass
class Producer:
    buffer: Buffer = field(default_factory=Buffer)


def with_buffer() -> tuple[App, Buffer]:
    app = App(producer=Producer())
    wait_for_changelog_on_flush(app)
    return app, app.producer.buffer


def test_flush_waits_until_every_buffered_write_is_acknowledged() -> None:
    asyncio.run(flush_waits_until_every_buffered_write_is_acknowledged())


async def flush_waits_until_every_buffered_write_is_acknowledged() -> None:
    _, buffer = with_buffer()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    buffer.put(first)
    buffer.put(second)
    flush = asyncio.create_task(buffer.flush())
    await asyncio.sleep(0.05)
    first.set_result("acked")
    await asyncio.sleep(0.05)
    assert not flush.done()  # the second write is not acknowledged yet: no commit
    second.set_result("acked")
    await asyncio.wait_for(flush, 2)


def test_flush_raises_for_a_failed_write_so_nothing_is_committed_past_it() -> None:
    asyncio.run(flush_raises_for_a_failed_write())


async def flush_raises_for_a_failed_write() -> None:
    _, buffer = with_buffer()
    failed = asyncio.get_running_loop().create_future()
    buffer.put(failed)
    failed.set_exception(RuntimeError("broker said no"))
    with pytest.raises(RuntimeError, match="broker said no"):
        await buffer.flush()


def test_flush_does_not_wait_while_the_producer_stops() -> None:
    asyncio.run(flush_does_not_wait_while_stopping())


async def flush_does_not_wait_while_stopping() -> None:
    _, buffer = with_buffer()
    buffer.put(asyncio.get_running_loop().create_future())  # never acknowledged
    buffer.should_stop = True
    await asyncio.wait_for(buffer.flush(), 2)
