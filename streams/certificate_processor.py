"""The certificate side's handlers: the authority's changes (re-keyed), and the listing
partitions' commands, on the certificate's own partition.

Per certificate partition, two tables:
- certificates: cert_no → the certificate's state (``certificate_side.CertState``);
- certificate-subscriptions: cert_no NUL listing partition → the token of that partition's
  watch. One subscription per (certificate, listing partition), never one per listing: a
  revocation of a certificate claimed by 100,000 listings is one re-check per partition.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streams import certificate_side, validation
from streams.certificate_side import CertDecision, CertState
from streams.errors import InvalidRecordError
from streams.join_protocol import (
    Answer,
    Expire,
    ListingUpdate,
    Subscribe,
    Unsubscribe,
    decode_command,
)
from streams.metrics import GuardMetrics
from streams.model import CertificateChange
from streams.processing import PartitionTable, Record
from streams.state_codec import (
    cert_partition_key,
    cert_prefix,
    decode_certificate,
    encode_certificate,
)
from topics.codecs import AvroCodec
from topics.partitioning import partition_for_key

log = logging.getLogger(__name__)

# (listing partition, key, update)
SendUpdate = Callable[[int, bytes, ListingUpdate], None]
# (certificate partition, key, the authority's record as received) -> re-keyed.
ForwardChange = Callable[[int, bytes, bytes], None]
# Until everything sent so far is acknowledged by the broker.
Delivered = Callable[[], Awaitable[None]]


subscription_prefix = cert_prefix  # all subscriptions of a certificate
subscription_key = cert_partition_key


@dataclass(frozen=True, slots=True)
class CertificateTables:
    certificates: PartitionTable
    subscriptions: PartitionTable


@dataclass(frozen=True, slots=True)
class CertificateOutputs:
    update: SendUpdate  # to the listing partition named
    forward_change: ForwardChange  # to the certificate's own partition
    delivered: Delivered


@dataclass(frozen=True, slots=True)
class CertificatePartitions:
    certificates: int  # of ccc-guard's certificate-keyed topics
    listings: int  # of the listing side's topics


class CertificateProcessor:
    def __init__(
        self,
        tables: CertificateTables,
        outputs: CertificateOutputs,
        partitions: CertificatePartitions,
        codec: AvroCodec,
        change_record: str,
        limits: validation.Limits,
        metrics: GuardMetrics,
        progress: Counter[str],
    ) -> None:
        self.tables, self.outputs, self.partitions = tables, outputs, partitions
        # (partition, cert key, trigger id) of fan-outs sent this batch, to be marked done.
        self._unmarked: list[tuple[int, bytes, str]] = []
        self.codec, self.change_record, self.limits = codec, change_record, limits
        self.metrics, self.progress = metrics, progress

    def partition_of(self, cert_key: bytes) -> int:
        """Where a certificate's state lives: ccc-guard's own topics, its own partitioner."""
        return partition_for_key(cert_key, self.partitions.certificates)

    # -- inputs ------------------------------------------------------------------------------

    async def on_authority_change(self, record: Record) -> None:
        """A record of the authority's feed. Applied here if its producer put it on the
        certificate's own partition (a murmur2 client: no extra hop, so it cannot be overtaken
        by a subscription sent after it); else re-keyed, as it came, onto that partition of
        ``certificate changes``."""
        decoded = self.codec.decode(self.change_record, record.value)
        change = validation.certificate_change(decoded, record.key, self.limits)
        key = change.cert_no.encode()
        partition = self.partition_of(key)
        if partition == record.partition:
            await self._on_change(record, change)
        else:
            self.outputs.forward_change(partition, key, record.value)

    async def on_change(self, record: Record) -> None:
        """A record of ``certificate changes``: the authority's, re-keyed."""
        decoded = self.codec.decode(self.change_record, record.value)
        await self._on_change(
            record, validation.certificate_change(decoded, record.key, self.limits)
        )

    async def _on_change(self, record: Record, change: CertificateChange) -> None:
        key = change.cert_no.encode()
        self._check_owned(record, key)
        self.progress["status_changes"] += 1
        state = self._state(record.partition, key)
        decision = certificate_side.on_status_change(state, change)
        outcome = "stale" if decision.state is None and decision.fanout is None else "applied"
        self.metrics.certificate_changes.labels(outcome).inc()
        self._apply(record.partition, change.cert_no, decision)

    async def on_command(self, record: Record) -> None:
        command = decode_command(record.value)
        if not record.key:
            raise InvalidRecordError("certificate command without a cert_no key")
        self._check_owned(record, record.key)
        cert_no, partition = record.key.decode(), record.partition
        state = self._state(partition, record.key)
        subscriptions = self.tables.subscriptions
        match command:
            case Subscribe(listings, token):
                if listings >= self.partitions.listings:
                    raise InvalidRecordError(f"subscription names listing partition {listings}")
                subscriptions.set(partition, subscription_key(cert_no, listings), token.encode())
                view = None if state is None else state.view
                self.outputs.update(listings, record.key, Answer(cert_no, view, token))
                late = certificate_side.late_expiry_recheck(state)
                if late is not None:
                    self.outputs.update(listings, record.key, late)
            case Unsubscribe(listings, token):
                key = subscription_key(cert_no, listings)
                if subscriptions.get(partition, key) == token.encode():
                    subscriptions.delete(partition, key)
            case Expire(at_ms):
                decision = certificate_side.on_expiry(state, at_ms)
                self._apply(partition, cert_no, decision)

    def _check_owned(self, record: Record, cert_key: bytes) -> None:
        """Certificate records are only read on the certificate's own partition, where its state
        is: one elsewhere was not written by ccc-guard (whose sends name the partition)."""
        expected = self.partition_of(cert_key)
        if record.partition != expected:
            raise InvalidRecordError(
                f"certificate {cert_key.decode(errors='replace')!r} belongs on partition "
                f"{expected}, read on {record.partition}"
            )

    # -- state -------------------------------------------------------------------------------

    async def after_batch(self) -> None:
        """Once the batch's re-checks are acknowledged, mark their fan-outs done: one round
        trip per batch that fanned out, not one per certificate."""
        if not self._unmarked:
            return
        unmarked, self._unmarked = self._unmarked, []
        await self.outputs.delivered()
        for partition, key, trigger_id in unmarked:
            self._mark_done(partition, key, trigger_id)

    def _mark_done(self, partition: int, key: bytes, trigger_id: str) -> None:
        # Unless a later record of the batch replaced the state: its own fan-out is marked.
        state = self._state(partition, key)
        if state is not None and state.fanout_trigger_id == trigger_id and not state.fanout_done:
            encoded = encode_certificate(certificate_side.mark_fanout_done(state))
            self.tables.certificates.set(partition, key, encoded)

    def _state(self, partition: int, key: bytes) -> CertState | None:
        value = self.tables.certificates.get(partition, key)
        return None if value is None else decode_certificate(value)

    def _apply(self, partition: int, cert_no: str, decision: CertDecision) -> None:
        key, certificates = cert_no.encode(), self.tables.certificates
        if decision.state is not None:
            certificates.set(partition, key, encode_certificate(decision.state))
        trigger = decision.fanout
        if trigger is None:
            return
        prefix = subscription_prefix(cert_no)
        listing_partitions = [
            int(sub_key[len(prefix) :])
            for sub_key, _ in self.tables.subscriptions.scan(partition, prefix)
        ]
        for listings in listing_partitions:
            self.outputs.update(listings, key, trigger)
        if listing_partitions:
            # Marked done only once every partition's re-check is acknowledged, after the
            # batch (``after_batch``): a crash before leaves the fan-out unfinished, and the
            # replayed trigger runs it again.
            self._unmarked.append((partition, key, trigger.trigger_id))
        else:
            self._mark_done(partition, key, trigger.trigger_id)
        self.metrics.fanout_partitions.labels(str(trigger.trigger)).observe(len(listing_partitions))
        # Most fan-outs are a certificate's first sighting with nobody waiting for it.
        log.log(
            logging.INFO if listing_partitions else logging.DEBUG,
            "re-checking the listings of %s (%s %s) on %d listing partition(s)",
            cert_no,
            trigger.trigger,
            trigger.view.status,
            len(listing_partitions),
        )
