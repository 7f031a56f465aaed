"""The certificate side's handlers: the authority's changes (re-keyed), and the listing
partitions' commands, on the certificate's own partition.

Per certificate partition, two tables:
- certificates: cert_no → the certificate's state (``certificate_side.CertState``);
- certificate-subscriptions: cert_no NUL listing partition → the token of that partition's
  watch. One subscription per (certificate, listing partition), never one per listing: a
  revocation of a certificate claimed by 100,000 listings is one re-check per partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
from streams.processing import PrefixScan, Record, Table
from streams.state_codec import (
    cert_partition_key,
    cert_prefix,
    decode_certificate,
    encode_certificate,
)
from topics.codecs import AvroCodec
from topics.partitioning import partition_for_key

log = logging.getLogger(__name__)

# (listing partition, key, update) -> once handed to the producer, the delivery's awaitable.
SendUpdate = Callable[[int, bytes, ListingUpdate], Awaitable[Awaitable[Any]]]
# (certificate partition, key, the authority's record as received) -> re-keyed.
ForwardChange = Callable[[int, bytes, bytes], Awaitable[None]]


subscription_prefix = cert_prefix  # all subscriptions of a certificate
subscription_key = cert_partition_key


@dataclass(frozen=True, slots=True)
class CertificateTables:
    certificates: Table
    subscriptions: Table
    scan: PrefixScan


@dataclass(frozen=True, slots=True)
class CertificatePartitions:
    certificates: int  # of ccc-guard's certificate-keyed topics
    listings: int  # of the listing side's topics


class CertificateProcessor:
    def __init__(
        self,
        tables: CertificateTables,
        send_update: SendUpdate,
        forward_change: ForwardChange,
        partitions: CertificatePartitions,
        codec: AvroCodec,
        change_record: str,
        limits: validation.Limits,
        metrics: GuardMetrics,
        progress: Counter[str],
    ) -> None:
        self.tables, self.send_update, self.partitions = tables, send_update, partitions
        self.forward_change = forward_change
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
            await self.forward_change(partition, key, record.value)

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
        state = self._state(key)
        decision = certificate_side.on_status_change(state, change)
        outcome = "stale" if decision.state is None and decision.fanout is None else "applied"
        self.metrics.certificate_changes.labels(outcome).inc()
        await self._apply(record.partition, change.cert_no, state, decision)

    async def on_command(self, record: Record) -> None:
        command = decode_command(record.value)
        if not record.key:
            raise InvalidRecordError("certificate command without a cert_no key")
        self._check_owned(record, record.key)
        cert_no = record.key.decode()
        state = self._state(record.key)
        match command:
            case Subscribe(partition, token):
                if partition >= self.partitions.listings:
                    raise InvalidRecordError(f"subscription names listing partition {partition}")
                self.tables.subscriptions[subscription_key(cert_no, partition)] = token.encode()
                answer = (
                    Answer(cert_no, None, token)
                    if state is None
                    else Answer(cert_no, state.view, token, state.changed_at)
                )
                await self.send_update(partition, record.key, answer)
                late = certificate_side.late_expiry_recheck(state)
                if late is not None:
                    await self.send_update(partition, record.key, late)
            case Unsubscribe(partition, token):
                key = subscription_key(cert_no, partition)
                if self.tables.subscriptions.get(key) == token.encode():
                    self.tables.subscriptions.pop(key, None)
            case Expire(at_ms):
                decision = certificate_side.on_expiry(state, at_ms)
                await self._apply(record.partition, cert_no, state, decision)

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

    def _state(self, key: bytes) -> CertState | None:
        value = self.tables.certificates.get(key)
        return None if value is None else decode_certificate(value)

    async def _apply(
        self, partition: int, cert_no: str, held: CertState | None, decision: CertDecision
    ) -> None:
        """``held`` is the state the decision was made from; the decision's own state, when it
        has one, replaces it."""
        key = cert_no.encode()
        if decision.state is not None:
            self.tables.certificates[key] = encode_certificate(decision.state)
        trigger = decision.fanout
        if trigger is None:
            return
        prefix = subscription_prefix(cert_no)
        deliveries = [
            await self.send_update(int(sub_key[len(prefix) :]), key, trigger)
            for sub_key, _ in self.tables.scan(self.tables.subscriptions, partition, prefix)
        ]
        await asyncio.gather(*deliveries)
        # Written only once every partition's re-check is acknowledged: a crash before this
        # line leaves the fan-out marked unfinished, and the replayed trigger runs it again.
        state = decision.state or held
        if state is not None and not state.fanout_done:
            self.tables.certificates[key] = encode_certificate(
                certificate_side.mark_fanout_done(state)
            )
        self.metrics.fanout_partitions.labels(str(trigger.trigger)).observe(len(deliveries))
        # Most fan-outs are a certificate's first sighting with nobody waiting for it.
        log.log(
            logging.INFO if deliveries else logging.DEBUG,
            "re-checking the listings of %s (%s %s) on %d listing partition(s)",
            cert_no,
            trigger.trigger,
            trigger.view.status,
            len(deliveries),
        )
