"""Running real workers and watching real topics, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError
from confluent_kafka import Producer as ConfluentProducer

from localkafka.ports import free_port
from streams.settings import Settings
from streams.worker_process import WorkerProcess, inherited_env
from topics.admin import ensure_topics
from topics.catalogue import Catalogue, build_catalogue
from topics.codecs import AvroCodec

REPO = Path(__file__).resolve().parents[2]
CODEC = AvroCodec()
# The platform whose model mismatches block in the shared guard (conftest.py); others warn.
MODEL_BLOCK_PLATFORM = "strict-mall"
Records = list[tuple[str, bytes, bytes]]  # (topic, key, value)


@dataclass
class Deployment:
    """One isolated ccc-guard installation on the shared broker: its own app id, topic prefix
    and state directories."""

    bootstrap: str
    root: Path
    partitions: int = 4
    extra_env: Mapping[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    def env(self, worker_index: int) -> dict[str, str]:
        return inherited_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "CCC_APP_ID": self.name,
                "CCC_TOPIC_PREFIX": f"{self.name}.",
                "CCC_PARTITIONS": str(self.partitions),
                "CCC_DATA_DIR": str(self.root / f"worker-{worker_index}"),
                "CCC_WEB_PORT": str(free_port()),
                "CCC_EXPIRY_SWEEP_INTERVAL_SECONDS": "1",
                "CCC_PROGRESS_INTERVAL_SECONDS": "5",
                **self.extra_env,
            }
        )

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env(0))

    @property
    def catalogue(self) -> Catalogue:
        return build_catalogue(self.settings.topic_naming())

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.bootstrap, self.catalogue.all()))


class Worker(WorkerProcess):
    """Worker ``index`` of a deployment, logging to ``worker-<index>.log`` in its root."""

    def __init__(self, deployment: Deployment, index: int = 0) -> None:
        self.deployment, self.index = deployment, index
        super().__init__(deployment.env(index), deployment.root / f"worker-{index}.log", cwd=REPO)


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    """Stop every worker still running, so none outlives the test as an orphan process."""
    for worker in workers:
        if worker.alive:
            worker.stop()


class TopicWatcher:
    """Collects every record of a topic, decoded, on a background thread."""

    def __init__(self, bootstrap: str, topic: str, record_name: str, partitions: int) -> None:
        self.topic = topic
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._args = (bootstrap, topic, record_name, partitions)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError(f"could not start watching {topic}")

    async def _run(self) -> None:
        bootstrap, topic, record_name, partitions = self._args
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                for messages in batches.values():
                    for message in messages:
                        record = CODEC.decode(record_name, message.value)
                        record["_key"], record["_value"] = message.key, message.value
                        record["_arrived"] = time.monotonic()
                        with self._lock:
                            self.records.append(record)
        finally:
            await consumer.stop()

    def snapshot(
        self, where: Callable[[dict[str, Any]], bool] = lambda r: True
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.records if where(r)]

    def wait_for(
        self,
        where: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """The matching records once there are at least ``count``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.snapshot(where)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} matching records, got {len(found)}: {found}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Feed:
    """Publishes wire records, as a platform and the authority would."""

    def __init__(self, bootstrap: str, catalogue: Catalogue) -> None:
        self.bootstrap, self.catalogue = bootstrap, catalogue

    def _send(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        """Each record in order, once acknowledged. While the broker is away or coming back (a
        test restarts it) the rest are sent again for up to two minutes, on a send timeout or
        any error Kafka calls retriable, as a platform's producer would: a broker that is just
        back can answer metadata before it lists its topics, which aiokafka reports as an
        unknown topic once its request timeout has passed."""
        sent = 0

        async def run() -> None:
            nonlocal sent
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=8 << 20)
            await producer.start()
            try:
                for topic, key, value in records[sent:]:
                    await producer.send_and_wait(topic, key=key, value=value)
                    sent += 1
            finally:
                await producer.stop()

        deadline = time.monotonic() + 120
        while True:
            try:
                asyncio.run(run())
                return
            except KafkaError as exc:
                # aiokafka flags its own send timeout as not retriable; a platform would retry it.
                retriable = exc.retriable or isinstance(exc, KafkaTimeoutError)
                if not retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def listings(self, *events: dict[str, Any]) -> None:
        topic = self.catalogue.listing_events.name
        self._send(
            [(topic, e["listing_id"].encode(), CODEC.encode("ListingEvent", e)) for e in events]
        )

    def certificates(self, *changes: dict[str, Any]) -> None:
        topic = self.catalogue.certificate_status.name
        self._send(
            [
                (topic, c["cert_no"].encode(), CODEC.encode("CertificateStatusChanged", c))
                for c in changes
            ]
        )

    def raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._send([(topic, key, value)])


def publish_confluent(bootstrap: str, records: Records) -> None:
    """confluent-kafka as a platform would use it: defaults, no partition given."""
    producer = ConfluentProducer({"bootstrap.servers": bootstrap})
    failures: list[Any] = []
    for topic, key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=_collect(failures))
        producer.poll(0)
    assert producer.flush(30) == 0, "confluent-kafka could not deliver everything"
    assert not failures, failures


def _collect(failures: list[Any]) -> Callable[[Any, Any], None]:
    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(error)

    return on_delivery


@dataclass
class Guard:
    """A running deployment: workers, a feed, and watchers on its output topics."""

    deployment: Deployment
    workers: list[Worker]
    feed: Feed
    verdicts: TopicWatcher
    deadletters: TopicWatcher

    def verdicts_of(self, listing: str) -> list[dict[str, Any]]:
        return self.verdicts.snapshot(lambda r: r["listing_id"] == listing)

    def wait_verdicts(
        self, listing: str, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        return self.verdicts.wait_for(lambda r: r["listing_id"] == listing, count, timeout)


@contextmanager
def running_guard(deployment: Deployment, workers: int = 1) -> Iterator[Guard]:
    deployment.create_topics()
    started: list[Worker] = []
    catalogue = deployment.catalogue
    verdicts = TopicWatcher(
        deployment.bootstrap, catalogue.verdicts.name, "ListingVerdict", deployment.partitions
    )
    deadletters = TopicWatcher(
        deployment.bootstrap, catalogue.deadletter.name, "DeadLetter", deployment.partitions
    )
    guard = Guard(deployment, started, Feed(deployment.bootstrap, catalogue), verdicts, deadletters)
    try:
        for index in range(workers):
            started.append(Worker(deployment, index).start())
        yield guard
    finally:
        # Tests may replace guard.workers (a restarted worker): stop those too.
        stop_all([*started, *guard.workers])
        verdicts.close()
        deadletters.close()


# -- fault tests (tests/integration/test_faults.py) -------------------------------------------

# Faust reads these from the environment. A SIGKILLed worker never leaves its consumer group, so
# its successor waits for the old member's session to expire: Faust's 60 s default would make
# every restart of a fault test wait a minute. 10 s is the shortest the broker accepts with
# margin (group.min.session.timeout.ms is 6 s).
FAST_FAILOVER_ENV: Mapping[str, str] = {
    "BROKER_SESSION_TIMEOUT": "10",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "BROKER_REBALANCE_TIMEOUT": "20",
    # The re-ask safety net within a fault test's patience (settle gives up after 20 s quiet).
    "CCC_REASK_AFTER_SECONDS": "5",
}


class BackgroundFeed:
    """Publishes batches of listing events and certificate changes on a thread, a pause between
    batches, while the test kills and restarts things; ``join`` re-raises what the thread hit.

    A batch is (certificate changes, listing events); changes go first within a batch.
    """

    def __init__(
        self,
        feed: Feed,
        batches: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]],
        pause: float = 0.5,
    ) -> None:
        self.sent_batches = 0
        self._feed, self._batches, self._pause = feed, batches, pause
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for changes, events in self._batches:
                if changes:
                    self._feed.certificates(*changes)
                if events:
                    self._feed.listings(*events)
                self.sent_batches += 1
                time.sleep(self._pause)
        except BaseException as exc:
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"feed still running after {timeout}s")
        if self._error is not None:
            raise AssertionError(f"feed failed: {self._error!r}") from self._error


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Returns once ``condition()`` holds; fails after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def quiet_period(
    count: Callable[[], int],
    quiet: float,
    timeout: float,
    until: Callable[[], bool] = lambda: False,
) -> bool:
    """True once ``count()`` has not changed for ``quiet`` seconds or ``until()`` holds; False
    when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    last, quiet_since = -1, time.monotonic()
    while not until():
        now, current = time.monotonic(), count()
        if current != last:
            last, quiet_since = current, now
        elif now - quiet_since >= quiet:
            return True
        if now > deadline:
            return False
        time.sleep(0.2)
    return True


def wait_until_quiet(
    watcher: TopicWatcher, quiet: float = 3.0, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every record once none has arrived for ``quiet`` seconds; fails after ``timeout``."""
    if not quiet_period(lambda: len(watcher.snapshot()), quiet, timeout):
        raise AssertionError(
            f"{watcher.topic}: records still arriving after {timeout}s "
            f"({len(watcher.snapshot())} so far), waiting for {quiet}s without one"
        )
    return watcher.snapshot()


def wait_until_caught_up(deployment: Deployment, timeout: float = 120.0) -> None:
    """Until the deployment's group has committed every record of every topic its agents
    consume: each input processed, none still waiting (a record a rebalance made the stream
    skip is read again only seconds later). Fails after ``timeout`` naming what is behind."""

    async def behind() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(deployment.name)
            tps = [
                TopicPartition(spec.name, p)
                for spec in deployment.catalogue.consumed()
                for p in range(spec.partitions)
            ]
            ends = await consumer.end_offsets(tps)
            done = {tp: meta.offset for tp, meta in committed.items()}
            return {
                f"{tp.topic}[{tp.partition}]": end - max(0, done.get(tp, 0))
                for tp, end in ends.items()
                if end > max(0, done.get(tp, 0))
            }
        finally:
            await consumer.stop()
            await admin.close()

    deadline = time.monotonic() + timeout
    while lagging := asyncio.run(behind()):
        if time.monotonic() > deadline:
            raise AssertionError(f"inputs not all processed after {timeout}s: {lagging}")
        time.sleep(0.5)


def undecided_events(verdicts: list[dict[str, Any]], event_ids: set[str]) -> set[str]:
    """The listing events that have no LISTING_EVENT verdict."""
    decided = {v["trigger_id"] for v in verdicts if v["trigger"] == "LISTING_EVENT"}
    return event_ids - decided


def final_live(verdicts: list[dict[str, Any]]) -> dict[str, bool]:
    """Each listing's state after its last verdict (verdicts of a listing are in topic order,
    one partition per listing): ALLOW or RESTORE leave it live."""
    return {v["listing_id"]: v["action"] in {"ALLOW", "RESTORE"} for v in verdicts}


def verdict_id_conflicts(verdicts: list[dict[str, Any]]) -> dict[tuple[str, str, str], set[str]]:
    """(listing_id, trigger_id, action) groups whose verdicts carry more than one verdict_id:
    a duplicate must repeat the original's id, or consumers cannot de-duplicate."""
    ids: dict[tuple[str, str, str], set[str]] = {}
    for v in verdicts:
        ids.setdefault((v["listing_id"], v["trigger_id"], v["action"]), set()).add(v["verdict_id"])
    return {group: found for group, found in ids.items() if len(found) > 1}


def duplicate_count(verdicts: list[dict[str, Any]]) -> int:
    """How many verdicts repeat an earlier verdict_id (at-least-once redeliveries)."""
    return len(verdicts) - len({v["verdict_id"] for v in verdicts})


class StalledConsumer:
    """A consumer of ``topic`` in group ``group`` that joins, is assigned partitions, fetches
    one batch and then stops: it never polls or commits again. With ``freeze`` its event loop
    is blocked too (a hung process: no heartbeats either, the broker keeps its connection);
    without it, it stays a healthy-looking group member that simply never reads."""

    def __init__(self, bootstrap: str, topic: str, group: str, *, freeze: bool) -> None:
        self.assigned: set[TopicPartition] = set()
        self._release = threading.Event()
        self._joined = threading.Event()
        self._error: BaseException | None = None
        self._args = (bootstrap, topic, group, freeze)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._joined.wait(60):
            raise AssertionError(f"stalled consumer never joined {group}: {self._error!r}")

    async def _run(self) -> None:
        bootstrap, topic, group, freeze = self._args
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1,
        )
        try:
            await consumer.start()
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
            self.assigned = set(consumer.assignment())
            self._joined.set()
            if freeze:
                self._release.wait()  # blocks this thread's loop: no poll, no heartbeat
            else:
                while not self._release.is_set():
                    await asyncio.sleep(0.1)  # the loop runs (heartbeats) but never fetches
        except BaseException as exc:
            self._error = exc
            self._joined.set()
        finally:
            await consumer.stop()

    def close(self) -> None:
        self._release.set()
        self._thread.join(30)


def read_topic(
    bootstrap: str, topic: str, partitions: int, timeout: float = 60.0
) -> list[tuple[int, int, Any, Any]]:
    """Every record of a topic as (partition, offset, key, value), raw, for diagnostics: read
    up to the end offsets it had when called; fails after ``timeout``."""

    async def run() -> list[tuple[int, int, Any, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[tuple[int, int, Any, Any]] = []
            behind = [tp for tp, end in ends.items() if end > 0]
            deadline = time.monotonic() + timeout
            while behind:
                if time.monotonic() > deadline:
                    short = {tp.partition: ends[tp] for tp in behind}
                    raise AssertionError(
                        f"timed out after {timeout}s reading {topic} to its end offsets: "
                        f"partitions {sorted(short)} short of {short}"
                    )
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend((m.partition, m.offset, m.key, m.value) for m in messages)
                behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


def read_table(deployment: Deployment, table: str) -> dict[bytes, bytes]:
    """A table as its changelog topic holds it (latest value per key; deleted keys left out),
    for diagnosing a failed test: what the worker believed about each key."""
    topic = dict(deployment.catalogue.changelogs)[table].name
    values: dict[bytes, bytes | None] = {}
    for _, _, key, value in read_topic(deployment.bootstrap, topic, deployment.partitions):
        values[key] = value
    return {k: v for k, v in values.items() if v is not None}
