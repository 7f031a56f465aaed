"""Wiring: Faust topics, tables, agents and the expiry sweep around the two pure sides.

Data path, top to bottom:

  listing events ─┐                                         ┌─> verdicts
                  ├─> listing agent ── listing_side rules ──┤
  listing updates ┘     (table: listings)                   └─> certificate commands
                                                                 (subscribe / unsubscribe)
  certificate status ──(elsewhere: re-keyed)─> certificate changes ─┐
  certificate status (on its own partition) ────────────────────────┤
                                                                    ├─> certificate agent ─┐
  certificate commands ─────────────────────────────────────────────┘  (tables:            │
                                                                 certificates,      │
                                        expiry sweep (timer) ─>  claims)            │
                                        certificate commands                        │
  listing updates (answers, re-checks) <── to the listing's own partition number ───┘

Partitions. A listing's events arrive on whatever partition the platform's producer chose
(murmur2, CRC32, FNV-1a: any partitioner consistent per key), and its state is kept there. That
partition number travels in every subscription and is kept in the claim index; answers and
re-checks are sent to it by number, never by hashing the listing id again. The certificate
side's topics are ccc-guard's own and partitioned by ``partition_for_key``; the authority's
feed, which another producer partitioned, is read by the certificate agent too: a record on
the certificate's own partition is applied at once, any other is re-keyed into ``certificate
changes`` first.
So each agent reads topics partitioned alike and finds its state in the partition being
processed. Agents stay thin: decode, call a pure function, write state, send what it says.
Bad input goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import FaustError

from streams import certificate_side, validation
from streams.certificate_processor import (
    CertificatePartitions,
    CertificateProcessor,
    CertificateTables,
)
from streams.clock import Clock, wall_clock_ms
from streams.errors import InvalidRecordError, RejectedRecordError, StateFormatError
from streams.faust_adapter import (
    ProcessedAcks,
    active_partitions,
    estimate_key_count,
    is_ready,
    iter_items_with_prefix,
)
from streams.join_protocol import (
    CertificateCommand,
    Expire,
    ListingUpdate,
    encode_command,
    encode_update,
)
from streams.listing_processor import (
    ListingOutputs,
    ListingProcessor,
    ListingTables,
)
from streams.metrics import GuardMetrics
from streams.model import Verdict
from streams.processing import Record
from streams.query import QueryReader, ShopSource
from streams.reask import AwaitingTracker
from streams.settings import Settings
from streams.shop_codec import decode_summary, tick_message, verdict_message
from streams.shop_processor import ShopProcessor, ShopTables
from streams.shop_risk import Shop, cst_day
from streams.state_codec import decode_certificate, may_await_answers
from topics.catalogue import Catalogue, TopicSpec
from topics.codecs import AvroCodec

log = logging.getLogger(__name__)

Handler = Callable[[Record], Awaitable[None]]

# Re-asks per round of the re-ask timer: enough to heal a bad crash within minutes, few enough
# that a worker merely behind on its answers is not buried under duplicates.
_REASKS_PER_ROUND = 1000
# Listings between two yields to the event loop while scanning the listings table.
_SCAN_YIELD_EVERY = 5000
# Larger payloads are cut in dead letters so the dead letter itself still fits a Kafka record.
_MAX_DEAD_LETTER_PAYLOAD = 512 * 1024


@dataclass
class Progress:
    """Counts since the last progress line; the operator's first view of a running worker."""

    counts: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        text = ", ".join(f"{name}={n}" for name, n in sorted(self.counts.items())) or "idle"
        self.counts.clear()
        return text


@dataclass
class CertificateScan:
    due: list[bytes] = field(default_factory=list)  # keys the sweep must expire
    statuses: list[str] = field(default_factory=list)  # status of every certificate held


def scan_certificates(certificates: Iterable[tuple[bytes, bytes]], now_ms: int) -> CertificateScan:
    """One pass over the certificate table: what the sweep must expire at ``now_ms``, and the
    status counts the metrics report."""
    scan = CertificateScan()
    for key, value in certificates:
        state = decode_certificate(value)
        scan.statuses.append(str(state.view.status))
        if certificate_side.is_due_for_expiry(state, now_ms):
            scan.due.append(key)
    return scan


class Topology:
    """Declares the app's channels, tables, agents and timers on a Faust app."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        catalogue: Catalogue,
        codec: AvroCodec,
        metrics: GuardMetrics,
        acks: ProcessedAcks,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.app, self.settings, self.catalogue, self.codec = app, settings, catalogue, codec
        self.metrics, self.acks, self.clock = metrics, acks, clock
        self.limits = validation.Limits.from_settings(settings)
        self.progress = Progress()

        self.deadletter = self._topic(catalogue.deadletter)
        # Inputs from outside are checked for size before decoding; ccc-guard's own internal
        # records are not (a verdict with many certificates' evidence can be large).
        self._size_limited = frozenset(spec.name for spec in catalogue.inputs())

        tables = {name: self._table(name) for name, _ in catalogue.changelogs}
        self.listings = tables["listings"]
        self.claims = tables["listing-claims"]
        self.watches = tables["certificate-watches"]
        self.certificates = tables["certificates"]
        self.subscriptions = tables["certificate-subscriptions"]
        self.shop_risk = tables["shop-risk"]
        self.shop_summaries = tables["shop-summaries"]

        self.awaiting = AwaitingTracker(settings.reask_after_s)
        self.listing_side = ListingProcessor(
            ListingTables(self.listings, self.claims, self.watches, iter_items_with_prefix),
            ListingOutputs(self._send_verdict, self._send_command),
            codec,
            catalogue.listing_events.avro_record,
            self.limits,
            metrics,
            self.awaiting,
            self.progress.counts,
            clock,
            settings.rules(),
        )
        self.certificate_side = CertificateProcessor(
            CertificateTables(self.certificates, self.subscriptions, iter_items_with_prefix),
            self._send_update,
            self._forward_change,
            CertificatePartitions(
                catalogue.certificate_commands.partitions, catalogue.listing_updates.partitions
            ),
            codec,
            catalogue.certificate_changes.avro_record,
            self.limits,
            metrics,
            self.progress.counts,
        )

        self.shop_side = ShopProcessor(
            ShopTables(self.shop_risk, self.shop_summaries, iter_items_with_prefix),
            self._send_alert,
            catalogue.shop_verdicts.partitions,
            codec,
            catalogue.verdicts.avro_record,
            settings.shop_thresholds(),
            metrics,
            self.progress.counts,
            clock,
        )

        listing_side_in = self._topic(catalogue.listing_events, catalogue.listing_updates)
        certificate_side_in = self._topic(
            catalogue.certificate_status,
            catalogue.certificate_changes,
            catalogue.certificate_commands,
        )
        self._agent(
            "listing-side",
            listing_side_in,
            {
                catalogue.listing_events.name: self.listing_side.on_listing_event,
                catalogue.listing_updates.name: self.listing_side.on_update,
            },
        )
        self._agent(
            "certificate-side",
            certificate_side_in,
            {
                catalogue.certificate_status.name: self.certificate_side.on_authority_change,
                catalogue.certificate_changes.name: self.certificate_side.on_change,
                catalogue.certificate_commands.name: self.certificate_side.on_command,
            },
        )
        self._agent(
            "shop-side",
            self._topic(catalogue.shop_verdicts),
            {catalogue.shop_verdicts.name: self.shop_side.on_record},
        )
        app.timer(settings.expiry_sweep_interval_s, name="expiry-sweep")(self.expiry_sweep)
        app.timer(settings.shop_sweep_interval_s, name="shop-sweep")(self.shop_sweep)
        app.timer(settings.progress_interval_s, name="progress")(self._log_progress)

        self._rescan_awaiting = False
        # mode's handler type names a generic signal parameter mypy cannot match to any method.
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        app.timer(settings.reask_after_s, name="reask")(self.reask_stalled)

    # -- declarations ------------------------------------------------------------------------

    def _topic(self, *specs: TopicSpec) -> Any:
        """A Faust channel over one topic, or over several co-partitioned ones (an agent's
        inputs). Topics are created beforehand by ``ensure_topics``, so the config given here
        only matters to Faust's own declaration, and a shared channel declares none."""
        first = specs[0]
        return self.app.topic(
            *(spec.name for spec in specs),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=first.partitions,
            replicas=first.replication_factor,
            config=first.config_dict if len(specs) == 1 else None,
        )

    def _table(self, name: str) -> Any:
        return self.app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
        )

    def _agent(self, name: str, channel: Any, handlers: Mapping[str, Handler]) -> None:
        async def agent(stream: Any) -> None:
            await self._dispatch(stream, handlers)

        self.app.agent(channel, name=name, concurrency=1)(agent)

    def table_partitions(self) -> dict[str, int]:
        return {name: self.settings.partitions for name, _ in self.catalogue.changelogs}

    def query_reader(self) -> QueryReader:
        """What the query API reads: the tables, on the partitions this worker is active for."""
        return QueryReader(
            self.listings,
            self.claims,
            self.certificates,
            iter_items_with_prefix,
            {
                name: functools.partial(active_partitions, self.app, name)
                for name in ("listings", "listing-claims", "certificates", "shop-summaries")
            },
            self.certificate_side.partition_of,
            ShopSource(
                self.shop_risk,
                self.shop_summaries,
                self.shop_side.partition_of,
                self.shop_side.thresholds,
                self.clock,
            ),
        )

    # -- outputs -----------------------------------------------------------------------------
    #
    # Straight to Faust's producer (aiokafka's send, which only appends to its batch), not
    # through ``Topic.send``: each output then costs no Faust FutureMessage and channel
    # round, which the profile showed as a tenth of the worker's time. Nothing is lost to
    # it: before every offset commit Faust flushes the producer, which waits for every
    # record appended, so no input is committed past an output still unsent.

    async def _produce(
        self, topic: TopicSpec, key: bytes, value: bytes, partition: int | None = None
    ) -> Any:
        """The delivery's awaitable, once the record is handed to the producer."""
        return await self.app.producer.send(topic.name, key, value, partition, None, None)

    async def _send_verdict(self, key: bytes, verdict: Verdict) -> None:
        """To the verdicts topic, and the same bytes to the shop side, on the shop's partition."""
        verdicts = self.catalogue.verdicts
        encoded = self.codec.encode(verdicts.avro_record, verdict.as_record())
        await self._produce(verdicts, key, encoded)
        shop_key = Shop(verdict.platform, verdict.shop_id).key()
        await self._produce(
            self.catalogue.shop_verdicts,
            shop_key,
            verdict_message(verdict.action, encoded),
            self.shop_side.partition_of(shop_key),
        )

    async def _send_alert(self, shop_key: bytes, alert: dict[str, object]) -> None:
        alerts = self.catalogue.shop_alerts
        await self._produce(alerts, shop_key, self.codec.encode(alerts.avro_record, alert))

    async def _send_command(self, cert_no: str, command: CertificateCommand) -> None:
        key = cert_no.encode()
        partition = self.certificate_side.partition_of(key)
        await self._produce(
            self.catalogue.certificate_commands, key, encode_command(command), partition
        )

    async def _send_update(self, partition: int, key: bytes, update: ListingUpdate) -> Any:
        """To the listing side, on the listing partition named; the delivery's awaitable."""
        return await self._produce(
            self.catalogue.listing_updates, key, encode_update(update), partition
        )

    async def _forward_change(self, partition: int, key: bytes, value: bytes) -> None:
        await self._produce(self.catalogue.certificate_changes, key, value, partition)

    # -- timers ------------------------------------------------------------------------------

    async def _on_rebalance_complete(self, sender: Any, **kwargs: Any) -> None:
        # Listings recovered from the changelog may await answers this worker never asked
        # for; the next re-ask round finds them (a signal handler must not hold recovery up).
        self._rescan_awaiting = True

    async def _rescan_awaiting_listings(self) -> None:
        """Which listings here await answers, from the table: yields to the event loop every
        few thousand keys, so a large store does not hold up heartbeats and agents."""
        since = self.awaiting.clock()
        found: list[bytes] = []
        for n, (key, value) in enumerate(self.listings.items(), 1):
            if may_await_answers(value):
                found.append(key)
            if n % _SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self.awaiting.replace(found, tracked_since=since)

    async def reask_stalled(self) -> None:
        """Ask again for certificate answers listing checks have awaited too long.

        A timer may not write tables, so it asks the listing's own partition to ask again
        (``Reask``): the listing agent repairs and re-sends the subscriptions in-stream."""
        if not is_ready(self.app):
            return
        if self._rescan_awaiting:
            self._rescan_awaiting = False
            started = time.monotonic()
            await self._rescan_awaiting_listings()
            log.info(
                "%d listing(s) await certificate answers after the rebalance (scan took %.2fs)",
                len(self.awaiting),
                time.monotonic() - started,
            )
        asked, listings = 0, 0
        for key in self.awaiting.due(_REASKS_PER_ROUND):
            request = self.listing_side.reask_request(key)
            if request is None:
                self.awaiting.track(key, awaiting=False)
                continue
            partition, reask, answers = request
            await self._send_update(partition, key, reask)
            self.awaiting.asked(key)
            asked, listings = asked + answers, listings + 1
        if asked:
            self.metrics.reasks.inc(asked)
            self.progress.counts["reasks"] += asked
            log.warning(
                "asked again for %d certificate answer(s) of %d listing(s) that waited over "
                "%.0fs (%d still awaiting)",
                asked,
                listings,
                self.settings.reask_after_s,
                len(self.awaiting),
            )

    async def expiry_sweep(self) -> None:
        """Expire, through the certificate stream, every certificate past its validity.

        A timer may not write tables (Faust ties each write to the partition of the event being
        processed), so the sweep only finds due certificates and sends each an ``Expire``
        command; the certificate agent decides and fans out in-stream.
        """
        now = self.clock()
        scan = scan_certificates(self.certificates.items(), now)
        for key in scan.due:
            await self._send_command(key.decode(), Expire(now))
        if scan.due:
            log.info("expiry sweep: %d certificate(s) past their validity", len(scan.due))
        self.metrics.sweep_expired.inc(len(scan.due))
        self.metrics.certificate_counts(scan.statuses)
        self.metrics.listings_indexed.set(estimate_key_count(self.listings))
        self.metrics.claims_indexed.set(estimate_key_count(self.claims))
        self.metrics.sweep_last_run.set(now / 1000)

    async def shop_sweep(self) -> None:
        """Tick every shop a day has left the window of, through the shop stream (a timer may
        not write tables); refresh the shop gauges."""
        if not is_ready(self.app):
            return
        start = self.shop_side.thresholds.window_start(cst_day(self.clock()))
        active = active_partitions(self.app, "shop-summaries")
        tracked = over = 0
        due: list[tuple[bytes, int]] = []
        # Read first, send after: the agent may change the table while a send awaits.
        for key, value in self.shop_summaries.items():
            partition = self.shop_side.partition_of(key)
            if partition not in active:
                continue  # a standby copy (memory://): its active owner ticks it
            summary = decode_summary(value)
            tracked, over = tracked + 1, over + summary.alerting
            if summary.oldest_day < start:
                due.append((key, partition))
        for n, (key, partition) in enumerate(due, 1):
            await self._produce(self.catalogue.shop_verdicts, key, tick_message(), partition)
            if n % _SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        if due:
            log.info("shop sweep: %d shop(s) with days past their window", len(due))
        self.metrics.shops_tracked.set(tracked)
        self.metrics.shops_over_threshold.set(over)

    # -- shared ------------------------------------------------------------------------------

    async def _dispatch(self, stream: Any, handlers: Mapping[str, Handler]) -> None:
        """One event at a time, in partition order, to the handler of the topic it came from."""
        async for event in stream.events():
            message = event.message
            await self._guarded(message, event.key, event.value, handlers[message.topic])
            self.acks.finished(message)  # only now may Faust commit past it

    async def _guarded(
        self,
        message: Any,
        key: bytes | None,
        value: bytes | None,
        handler: Handler,
    ) -> None:
        """Run ``handler``; a record it rejects, or that breaks it, goes to the dead-letter
        topic and the stream goes on. Broker and Faust errors are not the record's fault: they
        raise, and the worker stops rather than dead-letter good records."""
        try:
            if value is None:
                raise InvalidRecordError("record has no value (tombstone)")
            if message.topic in self._size_limited and len(value) > self.settings.max_record_bytes:
                raise InvalidRecordError(
                    f"value is {len(value)} bytes (limit {self.settings.max_record_bytes})"
                )
            await handler(Record(message.topic, message.partition, message.offset, key, value))
        except (KafkaError, FaustError, StateFormatError):
            # The broker or Faust is in trouble, or the state is another version's: not the
            # record's fault, so fail loudly rather than dead-letter good records.
            raise
        except RejectedRecordError as exc:
            await self._dead_letter(message, key, value, exc.kind, str(exc))
        except Exception as exc:
            log.exception(
                "failed to process %s[%d]@%d", message.topic, message.partition, message.offset
            )
            await self._dead_letter(message, key, value, "processing_error", repr(exc))

    async def _dead_letter(
        self, message: Any, key: bytes | None, value: bytes | None, kind: str, error: str
    ) -> None:
        payload = value or b""
        if len(payload) > _MAX_DEAD_LETTER_PAYLOAD:
            error += (
                f" (payload cut to its first {_MAX_DEAD_LETTER_PAYLOAD} of {len(payload)} bytes)"
            )
            payload = payload[:_MAX_DEAD_LETTER_PAYLOAD]
        self.progress.counts[f"dead_letters_{kind}"] += 1
        self.metrics.dead_letters.labels(message.topic, kind).inc()
        log.warning(
            "dead-lettered %s[%d]@%d: %s: %s",
            message.topic,
            message.partition,
            message.offset,
            kind,
            error,
        )
        record = {
            "source_topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": key,
            "payload": payload,
            "error": f"{kind}: {error}",
            "failed_at": self.clock(),
        }
        await self.deadletter.send(
            key=key, value=self.codec.encode(self.catalogue.deadletter.avro_record, record)
        )

    async def _log_progress(self) -> None:
        log.info(
            "progress (last %.0fs): %s", self.settings.progress_interval_s, self.progress.line()
        )
