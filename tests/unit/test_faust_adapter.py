"""The fixes to Faust's commit path, on stand-ins for the Faust objects they wrap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams import faust_adapter
from streams.errors import ChangelogNotAcknowledged
from streams.faust_adapter import (
    ProcessedAcks,
    commit_only_contiguous,
    wait_for_changelog_on_flush,
)


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
    should_stop: bool = False


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
    with pytest.raises(ChangelogNotAcknowledged, match="broker said no"):
        await buffer.flush()
    with pytest.raises(ChangelogNotAcknowledged):
        await buffer.flush()  # and for every commit after it: the worker must restart


def test_flush_does_not_wait_while_the_producer_stops() -> None:
    asyncio.run(flush_does_not_wait_while_stopping())


async def flush_does_not_wait_while_stopping() -> None:
    _, buffer = with_buffer()
    buffer.put(asyncio.get_running_loop().create_future())  # never acknowledged
    buffer.should_stop = True
    await asyncio.wait_for(buffer.flush(), 2)


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class OffsetBook:
    """The consumer's commit bookkeeping as far as the fix sees it. Its ``_new_offset`` is
    Faust's head check, off by one: it lets one missing offset at the head through."""

    def __init__(self) -> None:
        self._acked: dict[TP, list[int]] = {}
        self._committed_offset: dict[TP, int | None] = {}
        self.gaps: list[tuple[int, int]] = []

    def _new_offset(self, tp: TP) -> int | None:
        acked = sorted(self._acked[tp])
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] - committed > 1:
            return None
        end = acked[0]
        while end + 1 in acked:
            end += 1
        return end + 1

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((offset_from, offset_to))


def test_no_commit_over_an_unprocessed_offset_on_gapless_topics() -> None:
    book = OffsetBook()
    app = App(consumer=book)
    commit_only_contiguous(app, frozenset({"internal"}))
    internal, external = TP("internal", 0), TP("external", 0)
    for tp in (internal, external):
        book._committed_offset[tp] = 30
        book._acked[tp] = [31, 32, 33]  # offset 30 was fetched, dropped, never processed
    assert book._new_offset(internal) is None
    assert book._new_offset(external) == 34  # Faust's own behaviour elsewhere
    book._acked[internal] = [30, 31, 32, 33]  # read again after the rebalance
    assert book._new_offset(internal) == 34


def test_no_gap_filling_on_gapless_topics() -> None:
    book = OffsetBook()
    commit_only_contiguous(App(consumer=book), frozenset({"internal"}))
    asyncio.run(book._add_gap(TP("internal", 0), 5, 9))
    asyncio.run(book._add_gap(TP("external", 0), 5, 9))
    assert book.gaps == [(5, 9)]


def test_a_stopping_worker_waits_for_acks_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_adapter, "_STOPPING_ACK_WAIT_S", 0.2)
    app, buffer = with_buffer()
    app.should_stop = True  # the broker is gone: this write is never acknowledged

    async def flush_with_the_broker_gone() -> None:
        buffer.put(asyncio.get_running_loop().create_future())
        with pytest.raises(ChangelogNotAcknowledged, match="not committed"):
            await asyncio.wait_for(buffer.flush(), 5)

    asyncio.run(flush_with_the_broker_gone())


def test_flush_waits_only_for_writes_made_before_it() -> None:
    async def steady_stream_of_writes() -> None:
        _, buffer = with_buffer()
        loop = asyncio.get_running_loop()
        before = loop.create_future()
        buffer.put(before)
        flush = asyncio.create_task(buffer.flush())
        await asyncio.sleep(0.01)
        buffer.put(loop.create_future())  # written while the commit waits: never acked here
        before.set_result("acked")
        await asyncio.wait_for(flush, 3)

    asyncio.run(steady_stream_of_writes())


def test_a_hole_nothing_fills_is_committed_past_after_a_while() -> None:
    book, now = OffsetBook(), [0.0]
    commit_only_contiguous(App(consumer=book), frozenset({"internal"}), clock=lambda: now[0])
    tp = TP("internal", 0)
    book._committed_offset[tp] = 30
    book._acked[tp] = [40, 41]  # 30..39 gone: retention passed while the group was away
    assert book._new_offset(tp) is None
    now[0] = 299.0
    assert book._new_offset(tp) is None
    now[0] = 301.0
    assert book._new_offset(tp) == 42
