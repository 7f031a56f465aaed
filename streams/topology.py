"""Wiring: Faust topics, tables, agents and the expiry sweep around the two pure sides.

Data path, top to bottom:

  listing events ─┐                                         ┌─> verdicts
                  ├─> listing agent ── listing_side rules ──┤
  listing updates ┘     (table: listings)                   └─> certificate commands
                                                                 (subscribe / unsubscribe)
  certificate status ─> re-key agent ─> certificate changes ─┐
                                                             ├─> certificate agent ─┐
  certificate commands ──────────────────────────────────────┘  (tables:            │
                                                                 certificates,      │
                                        expiry sweep (timer) ─>  claims)            │
                                        certificate commands                        │
  listing updates (answers, re-checks) <── to the listing's own partition number ───┘

Partitions. A listing's events arrive on whatever partition the platform's producer chose
(murmur2, CRC32, FNV-1a: any partitioner consistent per key), and its state is kept there. That
partition number travels in every subscription and is kept in the claim index; answers and
re-checks are sent to it by number, never by hashing the listing id again. The certificate
side's topics are ccc-guard's own and partitioned by ``partition_for_key``; the authority's
feed, which another producer partitioned, is first re-keyed into ``certificate changes``.
So each agent reads topics partitioned alike and finds its state in the partition being
processed. Agents stay thin: decode, call a pure function, write state, send what it says.
Bad input goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import FaustError

from streams import certificate_side, listing_side, validation
from streams.errors import InvalidRecordError, RejectedRecordError, StateFormatError
from streams.faust_adapter import (
    ProcessedAcks,
    estimate_key_count,
    is_ready,
    iter_items_with_prefix,
)
from streams.join_protocol import (
    Answer,
    CertificateCommand,
    Expire,
    Recheck,
    RecheckMany,
    Subscribe,
    Unsubscribe,
    decode_command,
    decode_update,
    encode_command,
    encode_update,
)
from streams.metrics import GuardMetrics
from streams.reask import AwaitingTracker
from streams.settings import Settings
from streams.state_codec import (
    decode_certificate,
    decode_claim,
    decode_listing,
    encode_certificate,
    encode_claim,
    encode_listing,
    may_await_answers,
)
from topics.catalogue import Catalogue, TopicSpec
from topics.codecs import AvroCodec
from topics.partitioning import partition_for_key

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # epoch milliseconds
# (Faust message: topic, partition, offset; key; value) of one record
Handler = Callable[[Any, bytes | None, bytes], Awaitable[None]]

# The claim index holds one key per (certificate, listing): a NUL cannot occur in either id
# (validation refuses control characters), so it separates them unambiguously, and all claims
# of one certificate are adjacent in RocksDB's key order.
_CLAIM_SEPARATOR = b"\x00"
# Re-asks per round of the re-ask timer: enough to heal a bad crash within minutes, few enough
# that a worker merely behind on its answers is not buried under duplicates.
_REASKS_PER_ROUND = 1000
# Listings between two yields to the event loop while scanning the listings table.
_SCAN_YIELD_EVERY = 5000
# Listings per re-check batch: ~20 bytes each, so a batch stays a small record.
_RECHECK_BATCH = 500
# Larger payloads are cut in dead letters so the dead letter itself still fits a Kafka record.
_MAX_DEAD_LETTER_PAYLOAD = 512 * 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def claim_prefix(cert_no: str) -> bytes:
    return cert_no.encode() + _CLAIM_SEPARATOR


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

        self.verdicts = self._topic(catalogue.verdicts)
        self.deadletter = self._topic(catalogue.deadletter)
        self.certificate_commands = self._topic(catalogue.certificate_commands)
        self.certificate_changes = self._topic(catalogue.certificate_changes)
        self.listing_updates = self._topic(catalogue.listing_updates)

        tables = {name: self._table(name) for name, _ in catalogue.changelogs}
        self.listings = tables["listings"]
        self.certificates = tables["certificates"]
        self.claims = tables["claims"]

        listing_side_in = self._topic(catalogue.listing_events, catalogue.listing_updates)
        certificate_side_in = self._topic(
            catalogue.certificate_changes, catalogue.certificate_commands
        )
        app.agent(listing_side_in, name="listing-side", concurrency=1)(self._listing_agent)
        app.agent(self._topic(catalogue.certificate_status), name="certificate-rekey")(
            self._rekey_agent
        )
        app.agent(certificate_side_in, name="certificate-side", concurrency=1)(
            self._certificate_agent
        )
        app.timer(settings.expiry_sweep_interval_s, name="expiry-sweep")(self.expiry_sweep)
        app.timer(settings.progress_interval_s, name="progress")(self._log_progress)

        self.awaiting = AwaitingTracker(settings.reask_after_s)
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

    # -- listing side ------------------------------------------------------------------------

    async def _listing_agent(self, stream: Any) -> None:
        await self._dispatch(
            stream,
            {
                self.catalogue.listing_events.name: self._on_listing_event,
                self.catalogue.listing_updates.name: self._on_listing_update,
            },
        )

    async def _on_listing_event(self, message: Any, key: bytes | None, value: bytes) -> None:
        record = self.codec.decode(self.catalogue.listing_events.avro_record, value)
        event = validation.listing_event(record, key, self.limits)
        self.progress.counts["listing_events"] += 1
        self.metrics.listing_events.labels(str(event.event_type)).inc()
        state_key = event.listing_id.encode()
        outcome = listing_side.on_listing_event(
            self._listing_state(state_key), event, self.clock(), message.offset, message.partition
        )
        await self._apply_listing_outcome(state_key, event.listing_id, message.partition, outcome)

    async def _on_listing_update(self, message: Any, key: bytes | None, value: bytes) -> None:
        update = decode_update(value)
        if isinstance(update, RecheckMany):
            # Sent to this partition because the claim index says these listings live here.
            await self._recheck(message.partition, update.listing_ids, update)
            return
        if not key:
            raise InvalidRecordError("listing update without a listing_id key")
        listing_id = key.decode()
        match update:
            case Recheck():
                await self._recheck(message.partition, (listing_id,), update)
            case Answer(cert_no, view, token):
                outcome = listing_side.on_certificate_answer(
                    self._listing_state(key), listing_id, cert_no, view, self.clock(), token
                )
                await self._apply_listing_outcome(key, listing_id, message.partition, outcome)

    async def _recheck(
        self, partition: int, listing_ids: Iterable[str], update: Recheck | RecheckMany
    ) -> None:
        for listing_id in listing_ids:
            self.progress.counts["rechecks"] += 1
            key = listing_id.encode()
            outcome = listing_side.on_recheck(
                self._listing_state(key),
                listing_id,
                update.cert_no,
                update.view,
                update.trigger,
                update.trigger_id,
                update.at_ms,
                self.clock(),
            )
            await self._apply_listing_outcome(key, listing_id, partition, outcome)

    def _listing_state(self, key: bytes) -> listing_side.ListingState | None:
        value = self.listings.get(key)
        return None if value is None else decode_listing(value)

    async def _apply_listing_outcome(
        self, key: bytes, listing_id: str, partition: int, outcome: listing_side.Outcome
    ) -> None:
        await self._send_subscriptions(listing_id, partition, outcome)
        if outcome.changed:
            if outcome.state is None:
                self.listings.pop(key, None)
            else:
                self.listings[key] = encode_listing(outcome.state)
            self.awaiting.track(key, outcome.state is not None and bool(outcome.state.awaiting))
        for verdict in outcome.verdicts:
            self.progress.counts[f"verdicts_{verdict.action.lower()}"] += 1
            await self.verdicts.send(
                key=key,
                value=self.codec.encode(self.catalogue.verdicts.avro_record, verdict.as_record()),
            )
            self.metrics.verdict(verdict, self.clock())

    async def _send_subscriptions(
        self, listing_id: str, partition: int, outcome: listing_side.Outcome
    ) -> None:
        """``partition``: the listing's, where the answers must come back to."""
        for cert_no in outcome.subscribe:
            token = outcome.tokens[cert_no]
            await self._command(cert_no.encode(), Subscribe(listing_id, partition, token))
        for cert_no in outcome.unsubscribe:
            await self._command(cert_no.encode(), Unsubscribe(listing_id))

    async def _command(self, cert_key: bytes, command: CertificateCommand) -> None:
        await self.certificate_commands.send(
            key=cert_key, value=encode_command(command), partition=self._cert_partition(cert_key)
        )

    def _cert_partition(self, cert_key: bytes) -> int:
        """Where a certificate's state lives: ccc-guard's own topics, its own partitioner."""
        return partition_for_key(cert_key, self.catalogue.certificate_commands.partitions)

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

        A timer may not write tables, and needs not: asking again is only sending the
        subscriptions the listing state already records, with their tokens."""
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
            value = self.listings.get(key)
            state = None if value is None else decode_listing(value)
            if state is None or not state.awaiting:
                self.awaiting.track(key, awaiting=False)
                continue
            outcome = listing_side.reask(state)
            await self._send_subscriptions(key.decode(), state.partition, outcome)
            self.awaiting.asked(key)
            asked, listings = asked + len(outcome.subscribe), listings + 1
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

    # -- certificate side --------------------------------------------------------------------

    async def _rekey_agent(self, stream: Any) -> None:
        await self._dispatch(
            stream, {self.catalogue.certificate_status.name: self._on_authority_change}
        )

    async def _on_authority_change(self, message: Any, key: bytes | None, value: bytes) -> None:
        """Re-key the authority's record, as it came, onto the certificate's own partition of
        ``certificate changes``: the authority's producer may partition by another hash."""
        record = self.codec.decode(self.catalogue.certificate_status.avro_record, value)
        cert_key = validation.certificate_change(record, key, self.limits).cert_no.encode()
        await self.certificate_changes.send(
            key=cert_key, value=value, partition=self._cert_partition(cert_key)
        )

    async def _certificate_agent(self, stream: Any) -> None:
        await self._dispatch(
            stream,
            {
                self.catalogue.certificate_changes.name: self._on_status_change,
                self.catalogue.certificate_commands.name: self._on_command,
            },
        )

    async def _on_status_change(self, message: Any, key: bytes | None, value: bytes) -> None:
        record = self.codec.decode(self.catalogue.certificate_changes.avro_record, value)
        change = validation.certificate_change(record, key, self.limits)
        self._check_owned(message, change.cert_no.encode())
        self.progress.counts["status_changes"] += 1
        state = self._certificate_state(change.cert_no.encode())
        decision = certificate_side.on_status_change(state, change)
        outcome = "stale" if decision.state is None and decision.fanout is None else "applied"
        self.metrics.certificate_changes.labels(outcome).inc()
        await self._apply_certificate_decision(change.cert_no, state, decision)

    async def _on_command(self, message: Any, key: bytes | None, value: bytes) -> None:
        command = decode_command(value)
        if not key:
            raise InvalidRecordError("certificate command without a cert_no key")
        self._check_owned(message, key)
        cert_no = key.decode()
        state = self._certificate_state(key)
        match command:
            case Subscribe(listing_id, partition, token):
                if partition >= self.catalogue.listing_updates.partitions:
                    raise InvalidRecordError(f"subscription names listing partition {partition}")
                self.claims[claim_prefix(cert_no) + listing_id.encode()] = encode_claim(partition)
                listing_key = listing_id.encode()
                answer = Answer(cert_no, None if state is None else state.view, token)
                await self._update(listing_key, partition, encode_update(answer))
                late = certificate_side.late_expiry_recheck(state)
                if late is not None:
                    await self._update(listing_key, partition, _recheck_payload(late))
            case Unsubscribe(listing_id):
                self.claims.pop(claim_prefix(cert_no) + listing_id.encode(), None)
            case Expire(at_ms):
                await self._apply_certificate_decision(
                    cert_no, state, certificate_side.on_expiry(state, at_ms)
                )

    def _check_owned(self, message: Any, cert_key: bytes) -> None:
        """Certificate records are only read on the certificate's own partition, where its state
        is: one elsewhere was not written by ccc-guard (whose sends name the partition)."""
        expected = self._cert_partition(cert_key)
        if message.partition != expected:
            raise InvalidRecordError(
                f"certificate {cert_key.decode(errors='replace')!r} belongs on partition "
                f"{expected}, read on {message.partition}"
            )

    async def _update(self, key: bytes, partition: int, value: bytes) -> Any:
        """To the listing side, on the listing's own partition; the delivery future."""
        return await self.listing_updates.send(key=key, value=value, partition=partition)

    def _certificate_state(self, key: bytes) -> certificate_side.CertState | None:
        value = self.certificates.get(key)
        return None if value is None else decode_certificate(value)

    async def _apply_certificate_decision(
        self,
        cert_no: str,
        held: certificate_side.CertState | None,
        decision: certificate_side.CertDecision,
    ) -> None:
        """``held`` is the state the decision was made from; the decision's own state, when it
        has one, replaces it."""
        key = cert_no.encode()
        if decision.state is not None:
            self.certificates[key] = encode_certificate(decision.state)
        if decision.fanout is None:
            return
        await self._fan_out(decision.fanout)
        # Written only once every re-check is acknowledged: a crash before this line leaves
        # the fan-out marked unfinished, and the replayed trigger runs it again.
        state = decision.state or held
        if state is not None and not state.fanout_done:
            self.certificates[key] = encode_certificate(certificate_side.mark_fanout_done(state))

    async def _fan_out(self, fanout: certificate_side.Fanout) -> None:
        """Stream the claiming listings into one re-check batch per listing partition, sent
        whenever it is full: memory stays bounded by partitions times batch size."""
        started = time.monotonic()
        prefix = claim_prefix(fanout.cert_no)
        event = faust.current_event()
        assert event is not None, "fan-outs run while processing a certificate-keyed event"
        batches: dict[int, list[str]] = {}  # listing partition -> listing ids
        pending: list[asyncio.Future[Any]] = []
        listings = 0
        claims = iter_items_with_prefix(self.claims, event.message.partition, prefix)
        for claim_key, claim in claims:
            partition = decode_claim(claim)
            batch = batches.setdefault(partition, [])
            batch.append(claim_key[len(prefix) :].decode())
            listings += 1
            if len(batch) >= _RECHECK_BATCH:
                pending.append(await self._send_rechecks(fanout, partition, batch))
                batch.clear()
        for partition, batch in batches.items():
            if batch:
                pending.append(await self._send_rechecks(fanout, partition, batch))
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - started
        self.progress.counts["rechecks_sent"] += listings
        self.metrics.fanout_listings.labels(str(fanout.trigger)).observe(listings)
        self.metrics.fanout_seconds.labels(str(fanout.trigger)).observe(elapsed)
        # Most fan-outs are a certificate's first sighting with nobody waiting for it.
        log.log(
            logging.INFO if listings else logging.DEBUG,
            "re-checked %d listing(s) of %s (%s %s) in %.3fs",
            listings,
            fanout.cert_no,
            fanout.trigger,
            fanout.view.status,
            elapsed,
        )

    async def _send_rechecks(
        self, fanout: certificate_side.Fanout, partition: int, listing_ids: list[str]
    ) -> Any:
        """One batch of listings of one partition, sent there; keyed by the certificate."""
        batch = RecheckMany(
            fanout.cert_no,
            fanout.view,
            fanout.trigger,
            fanout.trigger_id,
            fanout.at_ms,
            tuple(listing_ids),
        )
        return await self._update(fanout.cert_no.encode(), partition, encode_update(batch))

    async def expiry_sweep(self) -> None:
        """Expire, through the certificate stream, every certificate past its validity.

        A timer may not write tables (Faust ties each write to the partition of the event being
        processed), so the sweep only finds due certificates and sends each an ``Expire``
        command; the certificate agent decides and fans out in-stream.
        """
        now = self.clock()
        scan = scan_certificates(self.certificates.items(), now)
        for key in scan.due:
            await self._command(key, Expire(now))
        if scan.due:
            log.info("expiry sweep: %d certificate(s) past their validity", len(scan.due))
        self.metrics.sweep_expired.inc(len(scan.due))
        self.metrics.certificate_counts(scan.statuses)
        self.metrics.listings_indexed.set(estimate_key_count(self.listings))
        self.metrics.claims_indexed.set(estimate_key_count(self.claims))
        self.metrics.sweep_last_run.set(now / 1000)

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
            if len(value) > self.settings.max_record_bytes:
                raise InvalidRecordError(
                    f"value is {len(value)} bytes (limit {self.settings.max_record_bytes})"
                )
            await handler(message, key, value)
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


def _recheck_payload(fanout: certificate_side.Fanout) -> bytes:
    return encode_update(
        Recheck(fanout.cert_no, fanout.view, fanout.trigger, fanout.trigger_id, fanout.at_ms)
    )
