"""What one worker can say about listings and certificates from the partitions it owns.

The query API's answers for compliance staff ("why was this listing blocked?"), built from the
join's own state: a listing's state, the certificate state and the claim index. Nothing here
knows HTTP or Faust: the reader takes the tables, a prefix scan and the partitions this worker
is active for, so the in-process tier reads dict tables with it.

A listing lives on the partition its platform's producer chose, which ccc-guard cannot compute
(see ``streams/topology.py``): a worker answers only for the partitions it is active for, and
says which they were, so whoever gathers the answers can tell a complete answer from one that a
rebalance cut short (``missing_partitions``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from streams import shop_codec as sc
from streams.certificate_side import CertState
from streams.clock import Clock
from streams.errors import PartitionsMovedError
from streams.listing_processor import claim_prefix
from streams.listing_side import ListingState
from streams.model import CertEvidence, VerdictTrigger
from streams.processing import Table
from streams.rules import verdict_id
from streams.shop_codec import decode_summary
from streams.shop_risk import (
    Shop,
    ShopSummary,
    Thresholds,
    WindowCounts,
    cst_day,
    sample_listings,
    window_counts,
)
from streams.state_codec import decode_certificate, decode_listing

# Keys read between two yields to the event loop: a scan of a certificate with 100,000
# claimers must not hold up heartbeats, agents or the query's own timeout.
_YIELD_EVERY = 1000
MAX_PAGE = 1000

# (table, partition, prefix, start=, open_store=) -> (key, value) in key order
Scan = Callable[..., Iterator[tuple[bytes, bytes]]]
ActivePartitions = Callable[[], frozenset[int]]

_EPOCH = dt.date(1970, 1, 1)


def iso_day(days: int | None) -> str | None:
    """A day number (days since 1970-01-01) as an ISO date, as people read it."""
    return None if days is None else (_EPOCH + dt.timedelta(days=days)).isoformat()


def listing_status(state: ListingState) -> str:
    """LIVE, BLOCKED, PENDING (its first check still awaits answers) or DELISTED."""
    if state.delisted:
        return "DELISTED"
    if state.live:
        return "LIVE"
    if state.last_verdict is None and not state.decided:
        return "PENDING"
    return "BLOCKED"


def _evidence_document(evidence: CertEvidence) -> dict[str, Any]:
    doc = evidence.as_record()
    doc["valid_until"] = iso_day(evidence.view.expires_on if evidence.view else None)
    return doc


def _verdict_summary(
    verdict_id: str, action: str, trigger: str, trigger_id: str, event_time: int, decided_at: int
) -> dict[str, Any]:
    return {
        "verdict_id": verdict_id,
        "action": action,
        "trigger": trigger,
        "trigger_id": trigger_id,
        "event_time": event_time,
        "decided_at": decided_at,
    }


def _verdict_history(listing_id: str, state: ListingState) -> list[dict[str, Any]]:
    """The listing's latest verdicts, oldest first: those of its recent events, and its last
    one, which may answer a certificate's change instead."""
    history: dict[str, tuple[int, dict[str, Any]]] = {}
    for decided in state.decided:
        if not decided.event_id:  # kept by a version that did not store event ids
            continue
        vid = verdict_id(listing_id, decided.event_id, decided.action)
        history[vid] = (
            decided.decided_at,
            _verdict_summary(
                vid,
                str(decided.action),
                str(VerdictTrigger.LISTING_EVENT),
                decided.event_id,
                decided.occurred_at,
                decided.decided_at,
            ),
        )
    last = state.last_verdict
    if last is not None:
        history[last.verdict_id] = (
            last.decided_at,
            _verdict_summary(
                last.verdict_id,
                str(last.action),
                str(last.trigger),
                last.trigger_id,
                last.event_time,
                last.decided_at,
            ),
        )
    return [summary for _, summary in sorted(history.values(), key=lambda e: e[0])]


def shop_document(
    shop: Shop,
    summary: ShopSummary,
    counts: WindowCounts,
    thresholds: Thresholds,
    sample: list[str],
) -> dict[str, Any]:
    """A shop's repeat-offender window as of today, and its latest alert."""
    last = summary.last_alert or {}
    return {
        "platform": shop.platform,
        "shop_id": shop.shop_id,
        "alerting": summary.alerting,
        "crossings": summary.crossings,
        "last_alert": {k: last[k] for k in ("alert_id", "kind", "decided_at") if k in last} or None,
        **counts.as_record(),
        "threshold_takedowns": thresholds.takedowns,
        "threshold_blocks": thresholds.blocks,
        "sample_listing_ids": sample,
    }


def listing_document(listing_id: str, state: ListingState) -> dict[str, Any]:
    """A listing as compliance staff ask about it: its status, why, the certificates it was
    decided on as the decision saw them, and its latest verdicts."""
    last = state.last_verdict
    if last is not None:
        reasons = [str(r) for r in last.reasons]
        warnings = [str(w) for w in last.warnings]
        evidence = [_evidence_document(e) for e in last.evidence]
        rules_version: str | None = last.rules_version
    else:
        reasons, warnings, rules_version = [str(r) for r in state.reasons], [], None
        evidence = [
            _evidence_document(CertEvidence(cert_no, view))
            for cert_no, view in sorted(state.views.items())
        ]
    return {
        "listing_id": listing_id,
        "status": listing_status(state),
        "platform": state.platform,
        "shop_id": state.shop_id,
        "category": state.category,
        "model": state.model,
        "claimed": list(state.claimed),
        "reasons": reasons,
        "warnings": warnings,
        "failing_certs": list(last.failing_certs if last is not None else state.failing),
        "rules_version": rules_version,
        "certificates": evidence,
        "awaiting": sorted(state.awaiting),
        "verdicts": _verdict_history(listing_id, state),
        "partition": state.partition,
    }


def certificate_document(state: CertState) -> dict[str, Any]:
    """A certificate as the worker holds it: its status and what last changed it."""
    view = state.view
    return {
        "cert_no": state.cert_no,
        "known": True,
        "status": str(view.status),
        "version": view.version,
        "valid_until": iso_day(view.expires_on),
        "category_code": view.category_code,
        "models": list(view.models),
        "changed_at": state.changed_at,
        "reason": state.record.get("reason"),
    }


@dataclass(frozen=True, slots=True)
class Claimer:
    listing_id: str
    partition: int
    status: str  # the listing's status, or UNKNOWN if its state is gone

    def as_json(self) -> dict[str, Any]:
        return {"listing_id": self.listing_id, "partition": self.partition, "status": self.status}


def merge_claimers(pages: Iterable[Iterable[Claimer]], limit: int) -> list[Claimer]:
    """The first ``limit`` claimers of several pages, each sorted by listing id."""
    merged = heapq.merge(*pages, key=lambda c: c.listing_id)
    return list(itertools.islice(merged, limit))


def missing_partitions(covered: Iterable[Iterable[int]], partitions: int) -> set[int] | None:
    """None when the answers covered every partition exactly once; otherwise the partitions
    no answer, or more than one, covered: a rebalance moved them while the answers were
    gathered, and the gathered answer cannot be trusted."""
    counts: dict[int, int] = {}
    for answer in covered:
        for partition in answer:
            counts[partition] = counts.get(partition, 0) + 1
    wrong = {p for p in range(partitions) if counts.get(p) != 1}
    wrong |= counts.keys() - set(range(partitions))
    return wrong or None


class _Pacer:
    """Yields to the event loop every ``_YIELD_EVERY`` steps of one query, whatever it reads."""

    def __init__(self) -> None:
        self.steps = 0

    async def step(self) -> None:
        self.steps += 1
        if self.steps % _YIELD_EVERY == 0:
            await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class ShopSource:
    """The shop side's tables and how it reads them."""

    risk: Table
    summaries: Table
    partition_of: Callable[[bytes], int]
    thresholds: Thresholds
    clock: Clock


class QueryReader:
    """Reads what this worker's active partitions hold. Every method returns the partitions
    it read with its answer, or raises ``PartitionsMovedError`` when they changed while it
    read. Scans never open a store Faust has closed (``open_store=False``)."""

    def __init__(
        self,
        listings: Table,
        claims: Table,
        certificates: Table,
        scan: Scan,
        active: Mapping[str, ActivePartitions],
        certificate_partition: Callable[[bytes], int],
        shops: ShopSource,
    ) -> None:
        self.listings, self.claims, self.certificates = listings, claims, certificates
        self.scan, self.active = scan, active
        self.certificate_partition, self.shops = certificate_partition, shops

    def listing(self, listing_id: str) -> tuple[dict[str, Any] | None, frozenset[int]]:
        active = self.active["listings"]()
        value = self.listings.get(listing_id.encode())
        document = None
        if value is not None:
            state = decode_listing(value)
            # A standby copy or a partition just handed over is not this worker's to answer.
            if state.partition in active:
                document = listing_document(listing_id, state)
        return document, active

    async def certificate(
        self, cert_no: str
    ) -> tuple[dict[str, Any] | None, int, dict[str, frozenset[int]]]:
        """The certificate's state if its partition is here, and how many listings of this
        worker's partitions claim it (their current claim or a pending check names it)."""
        key = cert_no.encode()
        owned = self.active["certificates"]()
        document = None
        if self.certificate_partition(key) in owned:
            value = self.certificates.get(key)
            if value is not None:
                document = certificate_document(decode_certificate(value))
        claim_partitions = self.active["listing-claims"]()
        count, pacer = 0, _Pacer()
        for partition in sorted(claim_partitions):
            async with aclosing(self._scan_claims(cert_no, partition, "", pacer)) as claimers:
                async for _ in claimers:
                    count += 1
        self._check_unmoved("listing-claims", claim_partitions)
        self._check_unmoved("certificates", owned)
        return document, count, {"certificates": owned, "listing-claims": claim_partitions}

    async def claimers(
        self, cert_no: str, after: str, limit: int
    ) -> tuple[list[Claimer], frozenset[int]]:
        """The first ``limit`` claimers after ``after`` on this worker's partitions, in
        listing id order: at most ``limit`` per partition are read, whatever the total."""
        partitions = self.active["listing-claims"]()
        pages: list[list[tuple[str, int]]] = []
        pacer = _Pacer()
        for partition in sorted(partitions):
            page: list[tuple[str, int]] = []
            async with aclosing(self._scan_claims(cert_no, partition, after, pacer)) as ids:
                async for listing_id in ids:
                    page.append((listing_id, partition))
                    if len(page) >= limit:
                        break
            pages.append(page)
        first = list(itertools.islice(heapq.merge(*pages), limit))
        result = []
        for listing_id, partition in first:
            result.append(Claimer(listing_id, partition, self._status(listing_id)))
            await pacer.step()
        self._check_unmoved("listing-claims", partitions)
        return result, partitions

    def shop(self, shop: Shop) -> tuple[dict[str, Any] | None, frozenset[int]]:
        """The shop's window as of today if its partition is here (None if it has no
        offence in its window, or is not here), and the partitions this worker holds."""
        source, key = self.shops, shop.key()
        owned = self.active["shop-summaries"]()
        partition = source.partition_of(key)
        stored = source.summaries.get(key) if partition in owned else None
        if stored is None:
            return None, owned
        summary, today = decode_summary(stored), cst_day(source.clock())
        days = sc.days_of(self._scan_shop(partition, key, sc.DAY), key)
        counts = window_counts(days, today, source.thresholds)
        if counts.blocks + counts.takedowns == 0 and not summary.alerting:
            return None, owned  # nothing left in its window: the next sweep forgets it
        listings = sc.last_days_of(self._scan_shop(partition, key, sc.LISTING), key, sc.LISTING)
        sample = sample_listings(listings, counts.start_day, source.thresholds.sample_size)
        document = shop_document(shop, summary, counts, source.thresholds, sample)
        self._check_unmoved("shop-summaries", owned)
        return document, owned

    def _scan_shop(self, partition: int, key: bytes, kind: bytes) -> Iterator[tuple[bytes, bytes]]:
        prefix = sc.kind_prefix(key, kind)
        return self.scan(self.shops.risk, partition, prefix, open_store=False)

    def _status(self, listing_id: str) -> str:
        value = self.listings.get(listing_id.encode())
        return "UNKNOWN" if value is None else listing_status(decode_listing(value))

    async def _scan_claims(
        self, cert_no: str, partition: int, after: str, pacer: _Pacer
    ) -> AsyncGenerator[str, None]:
        """Listing ids claiming ``cert_no`` on ``partition`` after ``after``, in id order."""
        prefix = claim_prefix(cert_no, partition)
        start = prefix + after.encode() if after else None
        for key, _ in self.scan(self.claims, partition, prefix, start=start, open_store=False):
            await pacer.step()
            listing_id = key[len(prefix) :].decode()
            if listing_id > after:
                yield listing_id

    def _check_unmoved(self, table: str, before: frozenset[int]) -> None:
        if self.active[table]() != before:
            raise PartitionsMovedError(table)
