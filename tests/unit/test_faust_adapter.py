"""The two fixes to Faust's commit path, on stand-ins for the Faust objects they wrap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.faust_adapter import ack_only_in_current_generation, wait_for_changelog_on_flush


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class Consumer:
    acked: list[int] = field(default_factory=list)

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass
class Message:
    offset: int
    generation_id: int


@dataclass
class App:
    consumer: Any = field(default_factory=Consumer)
    flow_control: FlowControl = field(default_factory=FlowControl)
    consumer_generation_id: int = 3
    producer: Any = None


def test_acks_pass_only_for_the_current_generation_while_flow_is_active() -> None:
    app = App()
    ack_only_in_current_generation(app)
    assert app.consumer.ack(Message(1, 3)) is True
    assert app.consumer.ack(Message(2, 2)) is False  # fetched before the rebalance
    app.flow_control.active = False  # a rebalance under way: Faust drops what it fetched
    assert app.consumer.ack(Message(3, 3)) is False
    app.flow_control.active = True
    assert app.consumer.ack(Message(4, 3)) is True
    assert app.consumer.acked == [1, 4]


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
