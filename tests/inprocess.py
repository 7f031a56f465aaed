"""The join's processors wired to dict tables and an in-process log: the tier between the pure
unit tests and the real broker. Records go through the same codecs and handlers as in a
worker; a partitioner of the test's choosing places the platforms' and the authority's
records; ccc-guard's own sends name their partitions, as on the broker.

Processing order is one global FIFO by default, or shuffled across partitions with each
partition's order kept (``run(rng)``), as several workers would interleave them.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from streams import validation
from streams.certificate_processor import (
    CertificatePartitions,
    CertificateProcessor,
    CertificateTables,
)
from streams.join_protocol import CertificateCommand, ListingUpdate, encode_command, encode_update
from streams.listing_processor import ListingOutputs, ListingProcessor, ListingTables
from streams.metrics import GuardMetrics
from streams.model import Verdict
from streams.processing import Record
from streams.reask import AwaitingTracker
from streams.rules import DEFAULT_RULES, Rules
from streams.settings import Settings
from streams.shop_codec import tick_message, verdict_message
from streams.shop_processor import ShopProcessor, ShopTables
from streams.shop_risk import DAY_MS, Shop, Thresholds
from topics.codecs import AvroCodec
from topics.partitioning import partition_for_key

CODEC = AvroCodec()
LIMITS = validation.Limits.from_settings(Settings.from_env({}))
Partitioner = Callable[[bytes, int], int]
SHOP_THRESHOLDS = Thresholds(takedowns=3, blocks=0, window_days=30, sample_size=10)


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default (``consistent_random``) for keyed records."""
    return zlib.crc32(key) % partitions


def fnv1a_partition(key: bytes, partitions: int) -> int:
    """Go sarama's default: 32-bit FNV-1a as a signed int; Go's % keeps the sign, then
    sarama drops it."""
    hashed = 0x811C9DC5
    for byte in key:
        hashed = ((hashed ^ byte) * 0x01000193) & 0xFFFFFFFF
    signed = hashed - (1 << 32) if hashed >= 1 << 31 else hashed
    return abs(signed) % partitions


PARTITIONERS: dict[str, Partitioner] = {
    "murmur2": partition_for_key,
    "crc32": crc32_partition,
    "fnv1a": fnv1a_partition,
}


def dict_scan(
    table: dict[bytes, bytes],
    partition: int,
    prefix: bytes,
    start: bytes | None = None,
    *,
    open_store: bool = True,
) -> Iterator[tuple[bytes, bytes]]:
    # Keys are unique across partitions (those that need it carry the partition), as in
    # Faust's in-memory store; sorted like RocksDB's, copied so the caller may write.
    first = prefix if start is None else max(prefix, start)
    return iter(sorted((k, v) for k, v in table.items() if k.startswith(prefix) and k >= first))


@dataclass
class Topic:
    """A topic's log per partition, with the consumer's read and committed positions."""

    name: str
    logs: list[list[tuple[bytes | None, bytes]]]  # per partition, by offset: (key, value)
    read: list[int]  # the next offset to process, per partition
    committed: list[int]
    sent: list[tuple[int, bytes | None, bytes]] = field(default_factory=list)  # (partition, ...)

    @classmethod
    def empty(cls, name: str, partitions: int) -> Topic:
        return cls(name, [[] for _ in range(partitions)], [0] * partitions, [0] * partitions)

    def append(self, partition: int, key: bytes | None, value: bytes) -> None:
        self.logs[partition].append((key, value))
        self.sent.append((partition, key, value))

    def unread(self, partition: int) -> bool:
        return self.read[partition] < len(self.logs[partition])

    def commit(self) -> None:
        self.committed = list(self.read)

    def rewind(self) -> None:
        """A crash: what was processed since the last commit is read again."""
        self.read = list(self.committed)


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class InProcessJoin:
    """Both sides of the join on ``partitions`` partitions, fed by a producer that uses
    ``partitioner``; ``verdicts`` collects every verdict sent."""

    TOPICS = ("events", "status", "changes", "commands", "updates")

    def __init__(
        self,
        partitions: int = 4,
        partitioner: Partitioner = partition_for_key,
        rules: Rules = DEFAULT_RULES,
    ) -> None:
        self.partitions, self.partitioner = partitions, partitioner
        self.now = 1_795_000_000_000
        self.topics = {name: Topic.empty(name, partitions) for name in self.TOPICS}
        self.listings: dict[bytes, bytes] = {}
        self.claims: dict[bytes, bytes] = {}
        self.watches: dict[bytes, bytes] = {}
        self.certificates: dict[bytes, bytes] = {}
        self.subscriptions: dict[bytes, bytes] = {}
        self.verdicts: list[Verdict] = []
        self.progress: Counter[str] = Counter()
        metrics = GuardMetrics(CollectorRegistry())
        self.awaiting = AwaitingTracker(30.0)
        self.listing_side = ListingProcessor(
            ListingTables(self.listings, self.claims, self.watches, dict_scan),
            ListingOutputs(self._verdict, self._command),
            CODEC,
            "ListingEvent",
            LIMITS,
            metrics,
            self.awaiting,
            self.progress,
            self.clock,
            rules,
        )
        self.certificate_side = CertificateProcessor(
            CertificateTables(self.certificates, self.subscriptions, dict_scan),
            self._update,
            self._forward,
            CertificatePartitions(partitions, partitions),
            CODEC,
            "CertificateStatusChanged",
            LIMITS,
            metrics,
            self.progress,
        )

    def clock(self) -> int:
        return self.now

    # -- what producers outside ccc-guard do ------------------------------------------------

    def publish_listing(self, event: dict[str, Any]) -> None:
        key = str(event["listing_id"]).encode()
        value = CODEC.encode("ListingEvent", event)
        self.topics["events"].append(self.partitioner(key, self.partitions), key, value)

    def publish_certificate(self, change: dict[str, Any]) -> None:
        key = str(change["cert_no"]).encode()
        value = CODEC.encode("CertificateStatusChanged", change)
        self.topics["status"].append(self.partitioner(key, self.partitions), key, value)

    # -- ccc-guard's sends ------------------------------------------------------------------

    async def _verdict(self, key: bytes, verdict: Verdict) -> None:
        self.verdicts.append(verdict)

    async def _command(self, cert_no: str, command: CertificateCommand) -> None:
        key = cert_no.encode()
        partition = self.certificate_side.partition_of(key)
        self.topics["commands"].append(partition, key, encode_command(command))

    async def _update(self, partition: int, key: bytes, update: ListingUpdate) -> Any:
        self.topics["updates"].append(partition, key, encode_update(update))
        return _done()

    async def _forward(self, partition: int, key: bytes, value: bytes) -> None:
        self.topics["changes"].append(partition, key, value)

    # -- processing -------------------------------------------------------------------------

    def handler(self, topic: str) -> Callable[[Record], Any]:
        return {
            "events": self.listing_side.on_listing_event,
            "updates": self.listing_side.on_update,
            "status": self.certificate_side.on_authority_change,
            "changes": self.certificate_side.on_change,
            "commands": self.certificate_side.on_command,
        }[topic]

    def pending(self) -> list[tuple[str, int]]:
        return [
            (name, p)
            for name, topic in self.topics.items()
            for p in range(self.partitions)
            if topic.unread(p)
        ]

    async def step(self, topic: str, partition: int) -> Record:
        log = self.topics[topic]
        offset = log.read[partition]
        key, value = log.logs[partition][offset]
        record = Record(topic, partition, offset, key, value)
        await self.handler(topic)(record)
        log.read[partition] = offset + 1
        return record

    def commit(self) -> None:
        for topic in self.topics.values():
            topic.commit()

    def crash(self) -> None:
        """Every table write reached its changelog and every output the broker, but no offset
        was committed since the last commit: those records are processed again (replays)."""
        for topic in self.topics.values():
            topic.rewind()
        self.awaiting = self.listing_side.awaiting = AwaitingTracker(30.0)

    async def run(self, rng: random.Random | None = None, limit: int = 1_000_000) -> int:
        """Process until every queue is empty; the records processed."""
        steps = 0
        while (ready := self.pending()) and steps < limit:
            topic, partition = rng.choice(ready) if rng else ready[0]
            await self.step(topic, partition)
            steps += 1
        return steps

    def run_sync(self, rng: random.Random | None = None) -> int:
        return asyncio.run(self.run(rng))

    # -- what the tests read ----------------------------------------------------------------

    def last_verdicts(self) -> dict[str, Verdict]:
        latest: dict[str, Verdict] = {}
        for verdict in self.verdicts:
            latest[verdict.listing_id] = verdict
        return latest


class InProcessShops:
    """The shop side on one partition's dict tables, with a clock the test moves; ``alerts``
    collects every alert sent, checked against the contract."""

    def __init__(self, thresholds: Thresholds = SHOP_THRESHOLDS) -> None:
        self.risk: dict[bytes, bytes] = {}
        self.summaries: dict[bytes, bytes] = {}
        self.alerts: list[dict[str, object]] = []
        self.log: list[tuple[bytes, bytes]] = []  # the shop stream of partition 0
        self.failing_sends = 0  # alerts whose send raises, the next ones first
        self.now = 1_796_090_400_000  # 2026-12-01 10:00 CST
        self.registry = CollectorRegistry()
        self.processor = ShopProcessor(
            ShopTables(self.risk, self.summaries, dict_scan),
            self._send,
            1,
            CODEC,
            "ListingVerdict",
            thresholds,
            GuardMetrics(self.registry),
            Counter(),
            lambda: self.now,
        )

    async def _send(self, key: bytes, alert: dict[str, object]) -> None:
        CODEC.encode("ShopAlert", alert)  # the contract takes it
        if self.failing_sends:
            self.failing_sends -= 1
            raise ConnectionError("the broker went away")  # the worker dies; nothing committed
        self.alerts.append(alert)

    def append(self, v: Verdict) -> int:
        encoded = CODEC.encode("ListingVerdict", v.as_record())
        self.log.append((Shop(v.platform, v.shop_id).key(), verdict_message(v.action, encoded)))
        return len(self.log) - 1

    def tick(self, shop: Shop) -> int:
        self.log.append((shop.key(), tick_message()))
        return len(self.log) - 1

    def process(self, offset: int) -> None:
        key, value = self.log[offset]
        asyncio.run(self.processor.on_record(Record("shops", 0, offset, key, value)))

    def feed(self, *verdicts: Verdict) -> None:
        for v in verdicts:
            self.process(self.append(v))

    def days_later(self, days: int) -> None:
        self.now += days * DAY_MS

    def late(self) -> float:
        value = self.registry.get_sample_value("ccc_guard_shop_late_verdicts_total")
        return value or 0.0
