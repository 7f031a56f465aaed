"""The fixes to Faust's commit path, on stand-ins for the Faust objects they wrap."""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from streams import faust_adapter
from streams.errors import ChangelogNotAcknowledged, StaticMembershipError
from streams.faust_adapter import (
    ProcessedAcks,
    commit_only_contiguous,
    name_foreign_static_assignment,
    wait_for_changelog_on_flush,
)


@dataclass
class Consumer:
    acked: list[int] = field(default_factory=list)
    _unacked_messages: set[Any] = field(default_factory=set)

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


@dataclass(frozen=True)
class Message:
    tp: Any
    offset: int
    generation_id: int = 3


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class Recovery:
    completed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Tables:
    recovery: Recovery = field(default_factory=Recovery)


@dataclass(frozen=True)
class Event:
    message: Any


@dataclass
class Queue:
    """An asyncio.Queue as far as the fix reads it: its deque of events."""

    _queue: list[Event] = field(default_factory=list)


@dataclass
class Channel:
    """A subscribed topic as Faust's conductor holds it: its names and its stream's buffer."""

    topics: tuple[str, ...]
    queue: Queue = field(default_factory=Queue)


@dataclass
class App:
    consumer: Any = field(default_factory=Consumer)
    producer: Any = None
    should_stop: bool = False
    flow_control: FlowControl = field(default_factory=FlowControl)
    consumer_generation_id: int = 3
    topics: list[Channel] = field(default_factory=list)
    tables: Tables = field(default_factory=Tables)
    rebalancing: bool = False


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


def test_streams_use_the_iterator_that_acks_through_the_consumer() -> None:
    import faust.streams

    ProcessedAcks().install(App())
    assert getattr(faust.streams, "_CStreamIterator") is None  # noqa: B009 - a private name


def test_an_event_finished_while_a_rebalance_began_is_read_again() -> None:
    app, acks = App(), ProcessedAcks()
    acks.install(app)
    app.flow_control.active = False  # the rebalance (or a stop) began while the handler ran
    acks.finished(Message("in-0", 7))
    app.consumer._unacked_messages.add(Message("in-0", 7))
    assert app.consumer.ack(Message("in-0", 7)) is False
    assert not app.consumer._unacked_messages  # or the rebalance would wait for it forever
    app.flow_control.active, app.consumer_generation_id = True, 4  # it is over: a new owner
    acks.finished(Message("in-0", 8, generation_id=3))  # fetched before it
    assert app.consumer.ack(Message("in-0", 8, generation_id=3)) is False
    assert app.consumer.acked == []


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
    Faust's: gaps count as acked, and the head check is off by one (it lets one missing offset
    at the head through)."""

    def __init__(self) -> None:
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._unacked_messages: set[Message] = set()
        self._committed_offset: dict[TP, int | None] = {}
        self._read_offset: dict[TP, int | None] = {}
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
        self.seeked_to: dict[TP, int] = {}
        self.read_again: list[dict[TP, int]] = []
        self.fetched: list[tuple[TP, Message]] = []

    def _new_offset(self, tp: TP) -> int | None:
        acked = sorted({*self._acked[tp], *(o for gap in self._gap[tp] for o in range(*gap[:2]))})
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] - committed > 1:
            return None
        end = acked[0]
        while end + 1 in acked:
            end += 1
        return end + 1

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        raise AssertionError("replaced by the fix")

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.read_again.append(partitions)

    def assignment(self) -> set[TP]:
        return {INTERNAL, EXTERNAL, CHANGELOG}

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> list[TP]:
        """Faust's: the partitions that have had an ack."""
        return [tp for tp in self._acked if topics is None or tp.topic in topics]

    async def seek_to_committed(self) -> dict[TP, int]:
        return dict(self.seeked_to)

    async def perform_seek(self) -> None:
        """Faust's: the read offsets become the committed ones."""
        for tp, offset in (await self.seek_to_committed()).items():
            self._read_offset[tp] = offset
            self._committed_offset[tp] = offset

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        while self.fetched:
            yield self.fetched.pop(0)


async def faust_reads(book: OffsetBook, tp: TP, offset: int) -> bool:
    """What Faust 0.15.3's ``Consumer._drain_messages`` does with each fetched record: a gap
    if it is more than one past the read offset, then on to the stream unless it is below the
    read offset (dropped as already read)."""
    r_offset = book._read_offset.get(tp)
    if r_offset is None or offset >= r_offset:
        if offset - (r_offset or 0) > 1 and r_offset:
            await book._add_gap(tp, r_offset + 1, offset)
        book._read_offset[tp] = offset
        return True
    return False


async def read(
    book: OffsetBook, offsets: list[int], *, tp: TP | None = None, seek_after: int = -1
) -> list[int]:
    """The offsets of ``tp`` (EXTERNAL) that reach the stream, with Faust's seek to the committed
    offsets right after ``seek_after`` was handed over (its batch goes on being handed over)."""
    tp = tp or EXTERNAL
    book.fetched = [(tp, Message(str(tp), offset)) for offset in offsets]
    streamed = []
    async for tp, message in book.getmany(timeout=1.0):
        if await faust_reads(book, tp, message.offset):
            streamed.append(message.offset)
        if message.offset == seek_after:
            await book.perform_seek()
    return streamed


INTERNAL, EXTERNAL, CHANGELOG = TP("internal", 0), TP("external", 0), TP("changelog", 0)


def book_with_fix(now: list[float] | None = None, app: App | None = None) -> OffsetBook:
    book, clock = OffsetBook(), now or [0.0]
    app = app or App()
    app.consumer = book
    app.tables.recovery.completed.set()
    commit_only_contiguous(
        app,
        frozenset({"internal", "external"}),
        frozenset({"internal"}),
        clock=lambda: clock[0],
    )
    return book


def test_no_commit_over_an_offset_that_was_fetched_and_never_processed() -> None:
    book = book_with_fix()
    for tp in (INTERNAL, EXTERNAL):
        book._committed_offset[tp] = 30
        book._acked[tp] = [31, 32, 33]  # offset 30 was dropped from the stream, never processed
        assert book._new_offset(tp) is None  # Faust's own check would commit 34
        book._acked[tp] = [30, 31, 32, 33]  # read again after the rebalance's seek
        assert book._new_offset(tp) == 34


def test_a_real_gap_is_committed_through_but_not_the_message_after_it() -> None:
    book = book_with_fix()
    book._committed_offset[EXTERNAL] = 30
    book._acked[EXTERNAL] = [30]
    # Read 30, then 35: 31..34 were compacted away. 35 itself is not processed yet.
    asyncio.run(book._add_gap(EXTERNAL, 31, 35))
    assert book._new_offset(EXTERNAL) == 35
    book._committed_offset[EXTERNAL] = 35  # what Faust's commit then records
    book._gap[EXTERNAL].chop(0, 35)
    book._acked[EXTERNAL] = [35]
    assert book._new_offset(EXTERNAL) == 36


def test_the_internal_topics_take_no_gaps() -> None:
    book = book_with_fix()
    asyncio.run(book._add_gap(INTERNAL, 5, 9))
    assert not book._gap[INTERNAL]


def test_records_fetched_before_the_rebalance_seek_make_no_gap_and_lose_nothing() -> None:
    book = book_with_fix()
    book._committed_offset[EXTERNAL] = 30
    book._read_offset[EXTERNAL] = 40  # 30..40 were handed over and dropped in the rebalance
    book.seeked_to = {EXTERNAL: 30}
    # 41 and 42 were fetched before the seek; 30.. are what the seek reads again.
    fetched = [41, 42, *range(30, 44)]
    streamed = asyncio.run(read(book, fetched, seek_after=41))
    assert not book._gap[EXTERNAL]  # Faust's: a gap 31..41, committed past
    assert streamed == fetched  # Faust's: 31..41 dropped as already read
    assert book._committed_offset[EXTERNAL] == 30


def test_a_seek_still_sets_the_read_offsets_of_the_changelogs() -> None:
    book = book_with_fix()
    book._read_offset[EXTERNAL] = book._read_offset[CHANGELOG] = 40
    book.seeked_to = {EXTERNAL: 30, CHANGELOG: 12}
    asyncio.run(book.perform_seek())
    assert book._read_offset == {EXTERNAL: 40, CHANGELOG: 12}  # recovery's business
    assert book._committed_offset == {EXTERNAL: 30, CHANGELOG: 12}


def test_records_dropped_right_after_the_seek_stay_a_hole() -> None:
    # Faust's getmany drops the records of a partition that is not active when their batch is
    # handed over, so the first record read again after a seek need not be the first the
    # broker has from the committed offset on: what lies before it is no gap.
    book = book_with_fix()
    book._committed_offset[EXTERNAL] = 30
    book._read_offset[EXTERNAL] = 40
    book.seeked_to = {EXTERNAL: 30}
    streamed = asyncio.run(read(book, [41, *range(33, 42)], seek_after=41))  # 30..32 dropped
    assert streamed == [41, *range(33, 42)]
    assert not book._gap[EXTERNAL]
    book._acked[EXTERNAL] = list(range(33, 42))
    assert book._new_offset(EXTERNAL) is None


def test_a_gap_after_the_records_read_again_is_still_a_gap() -> None:
    book = book_with_fix()
    book._committed_offset[EXTERNAL] = 30
    book._read_offset[EXTERNAL] = 33
    streamed = asyncio.run(read(book, [30, 31, 32, 33, 36]))  # read again; 34, 35 compacted
    assert streamed == [30, 31, 32, 33, 36]
    assert [(gap.begin, gap.end) for gap in book._gap[EXTERNAL]] == [(34, 36)]


def test_a_hole_read_again_reaches_the_stream() -> None:
    book = book_with_fix()
    book._committed_offset[INTERNAL] = 30
    book._read_offset[INTERNAL] = 45  # 30..39 skipped by the stream, 40..45 processed
    streamed = asyncio.run(read(book, list(range(30, 46)), tp=INTERNAL))
    assert streamed == list(range(30, 46))  # Faust's: none but 45


def test_a_hole_is_read_again_then_committed_past_if_nothing_fills_it() -> None:
    async def hole_over_time() -> None:
        now = [0.0]
        book = book_with_fix(now)
        book._committed_offset[INTERNAL] = 30
        book._acked[INTERNAL] = [40, 41]  # 30..39 skipped by the stream, or gone to retention
        assert book._new_offset(INTERNAL) is None
        now[0] = 6.0
        assert book._new_offset(INTERNAL) is None
        assert book._new_offset(INTERNAL) is None
        await asyncio.sleep(0)
        assert book.read_again == [{INTERNAL: 30}]  # once: read from the hole again
        now[0] = 299.0
        assert book._new_offset(INTERNAL) is None
        now[0] = 301.0  # nothing came: the offsets are gone
        assert book._new_offset(INTERNAL) == 42

    asyncio.run(hole_over_time())


async def stall_at_tail(
    app: App, book: OffsetBook, now: list[float], steps: list[float]
) -> list[dict[TP, int]]:
    """Faust's commit timer going over ``book`` at each of ``steps``: what is read again."""
    for step in steps:
        now[0] = step
        for tp in book._filter_tps_with_pending_acks():
            assert book._new_offset(tp) is None
        await asyncio.sleep(0)
    return book.read_again


def test_records_the_stream_skipped_at_a_partitions_tail_are_read_again() -> None:
    # 30..32 were read and skipped (a rebalance's generation, an unfinished event), and no
    # later record comes to reveal the hole: nothing has ever been acked on the partition.
    now, app = [0.0], App(topics=[Channel(("external",))])
    book = book_with_fix(now, app)
    book._committed_offset[EXTERNAL], book._read_offset[EXTERNAL] = 30, 32
    assert asyncio.run(stall_at_tail(app, book, now, [0.0, 3.0])) == []  # not yet: patience
    assert asyncio.run(stall_at_tail(app, book, now, [5.0])) == [{EXTERNAL: 30}]
    assert asyncio.run(stall_at_tail(app, book, now, [6.0, 9.0])) == [{EXTERNAL: 30}]
    # Read again and lost again: once more after as long, whatever other partitions of the
    # topic have buffered meanwhile.
    app.topics[0].queue._queue.append(Event(Message(TP("external", 1), 7)))
    assert asyncio.run(stall_at_tail(app, book, now, [10.0])) == [{EXTERNAL: 30}, {EXTERNAL: 30}]


def test_records_still_with_the_stream_are_not_read_again() -> None:
    now, app = [0.0], App(topics=[Channel(("external",))])
    book = book_with_fix(now, app)
    book._committed_offset[EXTERNAL], book._read_offset[EXTERNAL] = 30, 32
    book._unacked_messages.add(Message(EXTERNAL, 30))  # the agent is on it
    assert asyncio.run(stall_at_tail(app, book, now, [0.0, 6.0, 12.0])) == []
    book._unacked_messages.clear()
    buffered = app.topics[0].queue._queue
    buffered.append(Event(Message(EXTERNAL, 31)))  # buffered for the stream
    assert asyncio.run(stall_at_tail(app, book, now, [13.0, 19.0])) == []
    buffered.clear()
    app.rebalancing = True  # the rebalance's seek reads them again
    assert asyncio.run(stall_at_tail(app, book, now, [20.0, 26.0])) == []
    app.rebalancing = False
    book._read_offset[EXTERNAL] = 29  # all read was committed: an idle partition
    assert asyncio.run(stall_at_tail(app, book, now, [27.0, 33.0])) == []
    book._read_offset[CHANGELOG], book._committed_offset[CHANGELOG] = 40, 12  # not a stream's
    assert asyncio.run(stall_at_tail(app, book, now, [34.0, 40.0])) == []


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


def test_after_a_rebalance_a_partition_never_committed_is_read_from_its_start() -> None:
    book = book_with_fix()
    book.seeked_to = {EXTERNAL: 30}  # committed; INTERNAL has no commit yet
    asyncio.run(book.perform_seek())
    # The changelog is the tables' business (recovery), not the streams'.
    assert book.read_again == [{INTERNAL: 0}]


def _assignment_for(url: str) -> Any:
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
    from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

    metadata = ClientMetadata(
        assignment=ClientAssignment(actives={}, standbys={}), url=url, changelog_distribution={}
    )
    return ConsumerProtocolMemberAssignment(0, [], zlib.compress(metadata.dumps()))


def test_a_static_member_handed_another_urls_assignment_is_told_what_to_change() -> None:
    from streams.app import create_app
    from streams.settings import Settings

    app, _ = create_app(Settings.from_env({"CCC_STORE": "memory://", "CCC_WEB_PORT": "6070"}))
    assignor: Any = app.assignor
    name_foreign_static_assignment(assignor, "ccc-guard-0")
    assignor.on_assignment(_assignment_for("http://127.0.0.1:6070"))  # its own: taken
    with pytest.raises(StaticMembershipError, match=r"'ccc-guard-0'.*127\.0\.0\.1:6066.*6070"):
        assignor.on_assignment(_assignment_for("http://127.0.0.1:6066"))
