"""The one place that touches Faust internals, and why.

Commits after changelogs: a table write is handed to the producer through Faust's
``ProducerBuffer`` (a queue drained by a task). Before committing input offsets Faust flushes
that buffer, but ``ProducerBuffer.flush`` gives up when no message went out within 0.1 s and
returns while the last message taken off the queue is still on its way to aiokafka. Offsets
were then committed ahead of the state changes they caused; a crash lost those changes for
good (found by the kill test: listings recovered to older state and re-emitted older verdicts).
``wait_for_changelog_on_flush`` makes the flush also wait for every buffered write's ack.

Acks only for processed events: Faust acks an event when its stream moves past it, whether or
not the agent finished it. During a rebalance the stream drops events fetched before it
(flow control suspended, or an older consumer generation) unprocessed, but acks them; an agent
cancelled while stopping acks the event it was in the middle of; and an event whose handler
was still running when the rebalance or stop began is acked although its table writes may have
missed the hand-over. A commit could then pass events nobody processed, or whose effects were
lost (found by the rebalance test: subscriptions neither indexed nor answered, certificate
changes never applied). ``ProcessedAcks`` lets through only the acks of events the agent
finished within one undisturbed generation; the others are read again from the committed
offset, as replays.

No commit over a hole: Faust commits the longest run of acked offsets, but its check that the
run starts at the committed offset is off by one, so a single offset that was fetched and never
processed (dropped from the stream during a rebalance) is committed past; and its "gap" filling,
meant for compacted topics, counts the message that reveals a gap as acked before it is
processed. Seen in the rebalance test as listing events, subscriptions and certificate changes
no worker ever processed. ``commit_only_contiguous`` corrects the bookkeeping; an unprocessed
offset then holds commits back until the rebalance's seek to the committed offset reads it
again. Real gaps (compaction, transaction markers) are still gaps; the internal topics, which
only ccc-guard writes, have none.

Gaps only where the broker has no record: Faust finds a gap by comparing each record's offset
with the partition's read offset, and its seek to the committed offsets at the end of a
rebalance sets that read offset, while a fetch batch taken before the seek may still be being
handed to the stream (Faust resumes partitions before it seeks). The batch's next record then
looked like a gap from the committed offset up to it, and the records read again after the seek
were dropped as already read: an input topic's gap is committed past, so a certificate change
was lost for good (found by the rebalance test: a revocation no worker applied). Seeks now leave
the read offsets of consumed partitions alone, and a record at or below its partition's read
offset, which only a seek back can deliver, moves the read offset back to just before it: it is
processed (a replay), and no gap is inferred across a seek. Nor is one inferred between the
committed offset and the first record read again: Faust's getmany silently drops the records of
a partition that is not active when their batch is handed over, so that record need not be the
first the broker has (a transaction marker at the committed offset is therefore a hole: read
again after 5 s, committed past with a warning after 5 minutes; nothing is lost).

A hole at a partition's tail: the checks above see a hole only when a later record is acked.
Records skipped at the end of what a partition has (a certificate change, the last events of a
feed) had none, and stayed unprocessed until the next record or rebalance on that partition
(the likely cause of one chaos-test failure in CI: three certificate changes never
committed while the worker sat idle for five minutes, with no hole logged). A partition read
past its committed offset, with nothing acked, in flight or buffered for it, is read again
after 5 s.

Static members keep their URL: a worker restarted under its group instance id (KIP-345) gets
the assignment of its previous life back from the broker, without a rebalance, and Faust's
assignor asserts that the web URL inside it is this worker's own. Changing the host or port
across the restart failed that bare ``assert`` deep in aiokafka's join, and the worker sat idle.
``name_foreign_static_assignment`` raises ``StaticMembershipError`` instead, naming both URLs.

Bounded stop: mode's worker stops by awaiting every service's stop, and with the broker gone
some of those never return (seen: a worker still in ``stop_and_shutdown`` 15 minutes after two
SIGTERMs, logging connection errors every 100 ms). ``BoundedStopWorker`` starts a watchdog
thread at the first stop signal; a stop still unfinished when it fires ends the process at
once with ``EXIT_STOP_TIMED_OUT``. Nothing is committed past what was confirmed: offsets are
only committed after their deliveries' acks, and the events since the last commit are read
again by the next owner.

Stale local state is moved aside, not served and not a crash loop: a RocksDB partition whose
persisted changelog offset is at or past the end of the changelog the broker has was written
against another changelog (a data directory from another cluster, or from before the changelog
topics were deleted and made again). Faust raises ``ConsistencyError`` for it and the worker
exits, on every restart. ``quarantine_stale_stores`` checks each partition Faust is about to
recover, as Kafka Streams does with its checkpoints: a stale one is closed, its directory
renamed ``<name>.stale-<time>`` (kept for forensics) and rebuilt from the changelog. A stale
store whose changelog has meanwhile grown past its offset cannot be told from a good one.

Readiness: Faust has no public "assigned and recovered" flag; its table recovery service's
``completed`` event and the app's ``rebalancing`` flag together say it.

Faust tables are key-value maps with no range or prefix scan. The claim index is stored as one
key per (certificate, listing) pair so that a new claim costs O(1) however many listings claim
the certificate; a re-check must then find every key starting with the certificate's prefix.
Faust's RocksDB store keeps one database per partition (``_db_for_partition``), ordered by key,
so a seek gives exactly that range. The in-memory store (tests, development) has no order and is
scanned in full: fine for thousands of claims, not for production sizes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import faust.streams as faust_streams
from faust.assignor.client_assignment import ClientMetadata
from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore

from streams.errors import ChangelogNotAcknowledged, StaticMembershipError


def iter_items_with_prefix(
    table: Any,
    partition: int,
    prefix: bytes,
    start: bytes | None = None,
    *,
    open_store: bool = True,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``table`` in ``partition`` whose key starts with ``prefix``, in key
    order, from ``start`` on if given, without loading them into a list: the caller streams
    them. ``open_store=False`` (the query API): a partition whose RocksDB is not open yields
    nothing, rather than open again a store Faust closed when the partition was revoked."""
    store = table.data
    first = prefix if start is None or start < prefix else start
    if isinstance(store, RocksDBStore):
        if open_store:
            db = store._db_for_partition(partition)
        elif (db := store._dbs.get(partition)) is None:
            return
        iterator = db.iter()
        iterator.seek(first)
        while iterator.valid():
            key: bytes = iterator.key()
            if not key.startswith(prefix):
                return
            yield key, iterator.value()
            iterator.next()
    elif isinstance(store, MemoryStore):
        # Copy the matching items first: the dict may change while the caller awaits sends.
        yield from sorted(
            (k, v)
            for k, v in store.data.items()
            if isinstance(k, bytes) and k.startswith(prefix) and k >= first
        )
    else:  # pragma: no cover - only the two stores above are configurable
        raise TypeError(f"no prefix scan for store {type(store).__name__}")


def active_partitions(app: Any, table_name: str) -> frozenset[int]:
    """The partitions of a table this worker is active for now (standbys excluded): what a
    query may answer from. Empty while no assignment is in force."""
    topic = app.tables[table_name].changelog_topic.get_topic_name()
    return frozenset(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)


def table_owners(app: Any, table_name: str) -> dict[str, frozenset[int]]:
    """Worker URL -> the partitions of a table it is active for, as the group's last
    assignment says (Faust's router metadata, the basis of its own web routing)."""
    return {
        str(url): frozenset(p for partitions in topics.values() for p in partitions)
        for url, topics in app.router.table_metadata(table_name).items()
    }


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


class ProcessedAcks:
    """Faust acks only the events ccc-guard's agents finished (see above)."""

    def __init__(self) -> None:
        self._finished: set[tuple[Any, int]] = set()
        self._app: Any = None

    def finished(self, message: Any) -> None:
        """The agent is done with ``message``. Not counted if a rebalance or a stop began while
        it ran: its partition may already be another worker's, and what it wrote may have
        missed the hand-over, so the next owner reads it again (a replay)."""
        app = self._app
        if app is not None and (
            not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id
        ):
            return
        self._finished.add((message.tp, message.offset))

    def install(self, app: Any) -> None:
        # Faust's Cython stream iterator acks by writing the consumer's books directly, past
        # ``consumer.ack``: streams must use the pure-Python one, which calls it.
        setattr(faust_streams, "_CStreamIterator", None)  # noqa: B010 - a private name
        self._app = app
        consumer = app.consumer
        ack = consumer.ack

        def ack_finished(message: Any) -> bool:
            key = (message.tp, message.offset)
            if key not in self._finished:
                # Read again after the restart or rebalance, as a replay. Faust must stop
                # waiting for it too: a rebalance or a stop waits until every message it
                # handed out is acked.
                consumer._unacked_messages.discard(message)
                return False
            self._finished.discard(key)
            return bool(ack(message))

        consumer.ack = ack_finished


def commit_only_contiguous(
    app: Any,
    consumed_topics: frozenset[str],
    gapless_topics: frozenset[str],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Commit over no offset that was neither processed nor a real gap (see above).

    Corrections of Faust's bookkeeping: the head check is exact; a gap covers the offsets
    between the last one read and the one that revealed it (Faust's also covered that message
    itself, and left out the committed offset); seeks leave consumed partitions' read offsets
    alone and a record read again moves its read offset back, so no gap is inferred across a
    seek; and a consumed partition with no commit yet is read from its start after a
    rebalance. ``gapless_topics`` (the internal ones) take no gaps at all. A hole nothing fills
    for ``_HOLE_PATIENCE_S`` is not a dropped event (the rebalance's seek reads those again
    within seconds) but offsets gone to retention or a transaction marker: commits then go on
    from the first offset processed, with a warning. A hole still there after
    ``_HOLE_REREAD_S`` is read again once: the stream can skip offsets within a generation
    too. A hole at a partition's tail has no later ack to reveal it: a partition read past its
    committed offset, with nothing acked, in flight or buffered for it, is read again from the
    committed offset once it has stayed so for ``_HOLE_REREAD_S``."""
    consumer = app.consumer
    new_offset, getmany = consumer._new_offset, consumer.getmany
    read_offset = consumer._read_offset
    holes: dict[Any, tuple[int, float]] = {}  # tp -> (committed offset, since)
    reread: set[tuple[Any, int]] = set()  # holes already read again
    stalls: dict[Any, tuple[tuple[int, int], float]] = {}  # tp -> ((committed, read), since)
    held: set[Any] = set()  # partitions with a record in flight or buffered, at this commit
    pending_acks = consumer._filter_tps_with_pending_acks

    def tps_to_check(topics: Any = None) -> Iterator[Any]:
        # Faust visits only partitions that have had an ack; a tail hole may have none yet.
        tps = set(pending_acks(topics))
        tps.update(
            tp
            for tp in consumer.assignment()
            if tp.topic in consumed_topics
            and (topics is None or tp in topics or tp.topic in topics)
        )
        held.clear()
        held.update(message.tp for message in list(consumer._unacked_messages))
        for channel in app.topics:
            # A stream's buffer (an asyncio.Queue): events of every partition of its topics.
            held.update(event.message.tp for event in list(channel.queue._queue))
        return iter(tps)

    def stalled_tail(tp: Any) -> None:
        # Records were read past the committed offset, and nothing acked, in flight or
        # buffered holds them: the stream skipped them, and no later record will reveal it.
        committed, read = consumer._committed_offset.get(tp), read_offset.get(tp)
        start = committed or 0
        if (
            tp.topic not in consumed_topics
            or read is None
            or read < start
            or not is_ready(app)  # a rebalance or a recovery: its seek reads them again
            or tp in held
        ):
            stalls.pop(tp, None)
            return
        state, since = stalls.get(tp, (None, 0.0))
        if state != (start, read):
            stalls[tp] = ((start, read), clock())
        elif clock() - since >= _HOLE_REREAD_S:
            stalls[tp] = (state, clock())  # again after as long, should the read be lost too
            _read_again(consumer, tp, start, read + 1)

    def exact_new_offset(tp: Any) -> int | None:
        acked = consumer._acked[tp]
        if not acked:
            stalled_tail(tp)
            return None
        stalls.pop(tp, None)
        committed = consumer._committed_offset[tp]
        if committed is not None:
            gaps = consumer._gap[tp]
            head = min(min(acked), min((gap.begin for gap in gaps), default=min(acked)))
            if head > committed:
                hole, since = holes.get(tp, (None, 0.0))
                if hole != committed:
                    since = clock()
                    holes[tp] = (committed, since)
                waited = clock() - since
                if waited >= _HOLE_REREAD_S and (tp, committed) not in reread:
                    reread.add((tp, committed))
                    _read_again(consumer, tp, committed, head)
                if waited < _HOLE_PATIENCE_S:
                    return None  # the committed offset itself was not processed here: wait
                log.warning(
                    "%s[%d]: offsets %d..%d were never processed here and are not read again; "
                    "committing past them",
                    tp.topic,
                    tp.partition,
                    committed,
                    head - 1,
                )
                consumer._committed_offset[tp] = head
        holes.pop(tp, None)
        result: int | None = new_offset(tp)
        return result

    async def add_real_gap(tp: Any, offset_from: int, offset_to: int) -> None:
        if tp.topic in gapless_topics:
            return
        committed = consumer._committed_offset[tp]
        start = offset_from if committed is None else max(offset_from, committed)
        if start < offset_to:  # offset_to is the message read: acked when processed, not here
            gaps = consumer._gap[tp]
            gaps.addi(start, offset_to)
            gaps.merge_overlaps()

    async def perform_seek_keeping_read_offsets() -> None:
        # Faust's perform_seek, less its reset of consumed partitions' read offsets (see above).
        committed = await consumer.seek_to_committed()
        consumer._committed_offset.update(
            {tp: offset or None for tp, offset in committed.items() if offset is not None}
        )
        for tp, offset in committed.items():
            if tp.topic not in consumed_topics:
                read_offset[tp] = offset if offset is not None and offset >= 0 else None
        # A partition with no commit yet is not moved by the seek to committed offsets: it
        # would go on from where the fetcher had got to, past what was fetched and dropped in
        # the rebalance. Read it from its start instead (what was done is replayed).
        never_committed = {
            tp: 0
            for tp in consumer.assignment()
            if tp.topic in consumed_topics and consumer._committed_offset.get(tp) is None
        }
        if never_committed:
            await consumer.seek_wait(never_committed)

    async def getmany_reading_again(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for tp, message in getmany(timeout=timeout):
            last_read = read_offset.get(tp)
            if (
                tp.topic in consumed_topics
                and last_read is not None
                and message.offset <= last_read
            ):
                # Read again after a seek back: process it, and infer no gap before it.
                read_offset[tp] = message.offset - 1 if message.offset > 0 else None
            yield tp, message

    consumer._new_offset = exact_new_offset
    consumer._filter_tps_with_pending_acks = tps_to_check
    consumer._add_gap = add_real_gap
    consumer.perform_seek = perform_seek_keeping_read_offsets
    consumer.getmany = getmany_reading_again


def _read_again(consumer: Any, tp: Any, offset: int, head: int) -> None:
    """The stream skipped ``offset`` .. ``head - 1`` and no rebalance is coming to read them
    again: seek back (through Faust's consumer thread) so this worker processes them now.
    What follows them is read again too, as replays."""
    log.warning(
        "%s[%d]: offsets %d..%d were skipped by the stream; reading again from %d",
        tp.topic,
        tp.partition,
        offset,
        head - 1,
        offset,
    )
    task = asyncio.ensure_future(consumer.seek_wait({tp: offset}))
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("reading again failed: %r", task.exception())


def name_foreign_static_assignment(assignor: Any, instance_id: str) -> None:
    """Make ``assignor`` (Faust's) say why it refuses an assignment made for another URL."""
    on_assignment = assignor.on_assignment

    def checked(assignment: Any) -> None:
        try:
            on_assignment(assignment)
        except AssertionError:
            theirs = ClientMetadata.loads(assignor._decompress(assignment.user_data)).url
            if theirs == str(assignor._url):
                raise
            raise StaticMembershipError(
                f"group instance {instance_id!r} was given back the assignment of a worker at "
                f"{theirs}, and this one is at {assignor._url}: keep CCC_WEB_HOST (or "
                "CCC_WEB_ADVERTISED_HOST) and CCC_WEB_PORT the same across restarts of one "
                "CCC_GROUP_INSTANCE_ID, or wait out the old member's session timeout before "
                "starting it changed"
            ) from None

    assignor.on_assignment = checked


@dataclass(frozen=True, slots=True)
class StaleStore:
    table: str
    partition: int
    persisted_offset: int
    changelog_end: int
    moved_to: Path


def quarantine_stale_stores(app: Any, on_stale: Callable[[StaleStore], None]) -> None:
    """Before Faust's recovery reads its start offsets, move aside every partition store that
    belongs to another changelog (see above), and tell ``on_stale``."""
    recovery = app.tables.recovery
    build_offsets = recovery._build_offsets

    async def build_offsets_of_own_stores(
        consumer: Any, tps: set[Any], destination: Any, title: str
    ) -> None:
        ends = await consumer.highwaters(*tps) if tps else {}
        for tp in tps:
            table, end = recovery.tp_to_table.get(tp), ends.get(tp)
            persisted = None if table is None else table.persisted_offset(tp)
            if persisted is None or end is None or persisted < end:
                continue
            moved_to = _move_aside(table.data, tp.partition)
            destination[tp] = None  # read the changelog from its start
            on_stale(StaleStore(table.name, tp.partition, persisted, end, moved_to))
        await build_offsets(consumer, tps, destination, title)

    recovery._build_offsets = build_offsets_of_own_stores


def _move_aside(store: Any, partition: int) -> Path:
    db = store._dbs.pop(partition, None)
    if db is not None:
        db.close()
    store._key_index.clear()  # a cache of key -> partition, some of them in the stale store
    path: Path = store.partition_path(partition)
    moved_to = path.with_name(f"{path.name}.stale-{int(time.time())}")
    path.rename(moved_to)
    return moved_to


def is_ready(app: Any) -> bool:
    """Partitions assigned and every table recovered: the worker is processing."""
    recovery = app.tables.recovery
    return bool(recovery.completed.is_set() and not app.rebalancing)


_STOPPING_ACK_WAIT_S = 10.0
_HOLE_PATIENCE_S = 300.0
_HOLE_REREAD_S = 5.0
log = logging.getLogger(__name__)


def wait_for_changelog_on_flush(app: Any) -> None:
    """Make the producer's flush, which precedes every offset commit, wait until each table
    write handed to Faust's producer buffer before it is acknowledged by the broker (see
    above). Writes made while it waits are the next commit's business: waiting for them too
    would hold commits back for as long as events keep coming."""
    buffer = app.producer.buffer
    unacked: set[asyncio.Future[Any]] = set()
    failures: list[BaseException] = []
    put, flush = buffer.put, buffer.flush

    def settled(fut: asyncio.Future[Any]) -> None:
        unacked.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            failures.append(fut.exception())  # type: ignore[arg-type]

    def put_tracked(fut: asyncio.Future[Any]) -> None:
        unacked.add(fut)
        fut.add_done_callback(settled)
        put(fut)

    async def flush_until_acked() -> None:
        await flush()
        waiting = set(unacked)
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        # Unbounded while running, like the aiokafka flush that follows (a write fails, and
        # raises below, once the producer's request timeout passes). Bounded while stopping: a
        # worker told to stop exits even with the broker gone, without committing.
        while waiting and not buffer.should_stop:
            if app.should_stop:
                deadline = deadline or loop.time() + _STOPPING_ACK_WAIT_S
                if loop.time() > deadline:
                    raise ChangelogNotAcknowledged(
                        f"{len(waiting)} table write(s) unacknowledged after "
                        f"{_STOPPING_ACK_WAIT_S:.0f}s; offsets are not committed"
                    )
            _, waiting = await asyncio.wait(waiting, timeout=1.0)
        if failures:
            # Before the commit, and for every commit after it: a state change that never
            # reached the changelog must not be committed past. The worker must restart.
            raise ChangelogNotAcknowledged(f"a table write failed: {failures[0]!r}")

    buffer.put = put_tracked
    buffer.flush = flush_until_acked


EXIT_STOP_TIMED_OUT = 70  # EX_SOFTWARE: the stop did not finish in time


def bounded_stop_worker(stop_timeout_s: float) -> type[faust.Worker]:
    """The class for the app's ``Worker`` setting: Faust's worker, whose stop ends within
    ``stop_timeout_s`` of the first signal (see above)."""
    return type("BoundedStopWorker", (BoundedStopWorker,), {"stop_timeout_s": stop_timeout_s})


class BoundedStopWorker(faust.Worker):
    stop_timeout_s: float = 30.0
    _watchdog: threading.Timer | None = None

    def _schedule_shutdown(self, received: signal.Signals) -> None:
        # mode's handler of SIGINT and SIGTERM: the loop may never get to run the stop.
        self._start_watchdog(received.name)
        super()._schedule_shutdown(received)

    def on_worker_shutdown(self) -> None:
        # mode's hook before its final stop, also after a crash rather than a signal.
        self._start_watchdog("the worker's end")
        super().on_worker_shutdown()

    def _start_watchdog(self, cause: str) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.stop_timeout_s, self._stop_timed_out, [cause])
            self._watchdog.daemon = True
            self._watchdog.start()

    def _stop_timed_out(self, cause: str) -> None:
        log.critical(
            "stop after %s not finished in %.0f s (CCC_STOP_TIMEOUT_SECONDS): exiting now; "
            "the events since the last commit are read again",
            cause,
            self.stop_timeout_s,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_STOP_TIMED_OUT)
