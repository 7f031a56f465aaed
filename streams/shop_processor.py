"""The shop side's handler: every verdict, re-keyed by shop, counted into the shop's window;
the sweep's ticks, which let days leave it. Alerts when a shop crosses a threshold.

Each record is one shop's, on the shop's own partition (``partition_of``), so the shop's state
is all in the partition being processed. The counting itself is ``streams/shop_risk.py``.

Once per crossing: a verdict is counted once (its ``V`` mark), whatever repeats it; an alert is
sent only on a transition. At least once: a record read again after a crash (its state written,
its input not committed) sends its alert again, with the same id. The summary names the record
that caused the latest alert; and since the summary and the counts are two changelogs, a record
whose counts were stored but whose summary was not decides its transition again from them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from streams import shop_codec as sc
from streams.clock import Clock
from streams.metrics import GuardMetrics
from streams.model import Verdict
from streams.processing import PrefixScan, Record, Table
from streams.shop_risk import (
    OFFENCES,
    AlertKind,
    DayCounts,
    Offence,
    Shop,
    ShopSummary,
    Thresholds,
    WindowCounts,
    alert_record,
    cst_day,
    offence_of,
    sample_listings,
    tick_cause,
    transition,
    window_counts,
)
from topics.codecs import AvroCodec
from topics.partitioning import partition_for_key

log = logging.getLogger(__name__)

# (shop key, ShopAlert record) -> handed to the producer
SendAlert = Callable[[bytes, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ShopTables:
    risk: Table
    summaries: Table
    scan: PrefixScan


class ShopProcessor:
    def __init__(
        self,
        tables: ShopTables,
        send_alert: SendAlert,
        partitions: int,
        codec: AvroCodec,
        verdict_record: str,
        thresholds: Thresholds,
        metrics: GuardMetrics,
        progress: Counter[str],
        clock: Clock,
    ) -> None:
        self.tables, self.send_alert, self.partitions = tables, send_alert, partitions
        self.codec, self.verdict_record, self.thresholds = codec, verdict_record, thresholds
        self.metrics, self.progress, self.clock = metrics, progress, clock

    def partition_of(self, shop_key: bytes) -> int:
        """Where a shop's state lives: ccc-guard's own topic, its own partitioner."""
        return partition_for_key(shop_key, self.partitions)

    async def on_record(self, record: Record) -> None:
        message = sc.decode_message(record.value)
        if message is None:
            await self._on_tick(record)
            return
        action, avro = message
        if action not in OFFENCES:
            return  # most verdicts: nothing to count, not even to decode
        verdict = Verdict.from_record(self.codec.decode(self.verdict_record, avro))
        offence = offence_of(verdict)
        if offence is not None:
            await self._on_offence(record, Shop(verdict.platform, verdict.shop_id), offence)

    # -- verdicts ----------------------------------------------------------------------------

    async def _on_offence(self, record: Record, shop: Shop, offence: Offence) -> None:
        key, risk = shop.key(), self.tables.risk
        today = cst_day(self.clock())
        if offence.day < self.thresholds.window_start(today):
            self.metrics.shop_late_verdicts.inc()
            log.debug("verdict %s is older than the shop window: not counted", offence.verdict_id)
            return
        # Decided on a clock ahead of this worker's (around CST midnight): counted today, or
        # no window would hold it until the next verdict.
        offence = replace(offence, day=min(offence.day, today))
        summary = self._summary(key)
        mark = sc.item_key(key, sc.VERDICT, offence.verdict_id)
        if mark in risk:
            await self._counted_before(record, shop, summary, offence, today)
            return
        risk[mark] = sc.encode_day_mark(offence.day)
        self.progress["shop_offences"] += 1

        days = self._days(record.partition, key)
        days[offence.day] = days.get(offence.day, DayCounts()).with_offence(offence)
        changed = {
            offence.day,
            *self._move_last_day(key, sc.LISTING, (offence.listing_id,), offence.day, days),
            *self._move_last_day(key, sc.CERTIFICATE, offence.certificates, offence.day, days),
        }
        for day in changed:
            risk[sc.day_key(key, day)] = sc.encode_day(days[day])
        oldest = min(days) if summary is None else min(summary.oldest_day, offence.day)
        summary = replace(summary or ShopSummary(oldest), oldest_day=oldest)
        await self._decide(record, shop, summary, days, today, offence.verdict_id)

    def _move_last_day(
        self,
        key: bytes,
        kind: bytes,
        items: tuple[str, ...],
        day: int,
        days: dict[int, DayCounts],
    ) -> set[int]:
        """Each listing (certificate) is counted on the last day it offended: move it there.
        The days whose counts changed."""
        risk, changed = self.tables.risk, set()
        for item in items:
            item_key = sc.item_key(key, kind, item)
            stored = risk.get(item_key)
            last = None if stored is None else sc.decode_day_mark(stored)
            if last is not None and last >= day:
                continue  # a late verdict: the item already counts on a later day
            risk[item_key] = sc.encode_day_mark(day)
            days[day] = _count_newest(days[day], kind, +1)
            if last is not None and last in days:
                days[last] = _count_newest(days[last], kind, -1)
                changed.add(last)
        return changed

    async def _counted_before(
        self,
        record: Record,
        shop: Shop,
        summary: ShopSummary | None,
        offence: Offence,
        today: int,
    ) -> None:
        """A verdict already counted: a repeat, or this record read again after a crash."""
        if summary is not None and summary.alert_offset == record.offset and summary.last_alert:
            await self.send_alert(shop.key(), dict(summary.last_alert))  # may never have gone out
            return
        # The crash may have come between the counts and the summary: if the counts call for
        # RAISED, this record's first reading decided it, with this same cause and id. CLEARED
        # is left to the ticks (a repeat's verdict id may have cleared the shop before).
        days = self._days(record.partition, shop.key())
        summary = summary or ShopSummary(min(days, default=offence.day))
        await self._decide(
            record, shop, summary, days, today, offence.verdict_id, frozenset({AlertKind.RAISED})
        )

    # -- ticks -------------------------------------------------------------------------------

    async def _on_tick(self, record: Record) -> None:
        """A day may have left this shop's window: drop what is older, say CLEARED if the shop
        fell back under the thresholds, and forget a shop with nothing left in its window."""
        if record.key is None:
            return
        key = record.key
        summary = self._summary(key)
        if summary is None:
            return
        if summary.alert_offset == record.offset and summary.last_alert is not None:
            await self.send_alert(key, dict(summary.last_alert))  # this tick's, read again
            return
        today = cst_day(self.clock())
        start = self.thresholds.window_start(today)
        if summary.oldest_day >= start:
            return
        self._drop_before(record.partition, key, start)
        days = self._days(record.partition, key)
        # With no day left, the next tick forgets the shop; not this one, which may have just
        # sent CLEARED, and must still find that alert should its record be read again.
        summary = replace(summary, oldest_day=min(days, default=start - 1))
        kind = await self._decide(
            record, Shop.from_key(key), summary, days, today, tick_cause(today)
        )
        if not days and kind is None:
            del self.tables.summaries[key]
            self.progress["shops_forgotten"] += 1

    def _drop_before(self, partition: int, key: bytes, start: int) -> None:
        risk = self.tables.risk
        stale = []
        for item_key, value in self.tables.scan(risk, partition, sc.shop_prefix(key)):
            if sc.kind_of(key, item_key) == sc.DAY:
                day = int(item_key[len(sc.kind_prefix(key, sc.DAY)) :])
            else:
                day = sc.decode_day_mark(value)
            if day < start:
                stale.append(item_key)
        for item_key in stale:
            del risk[item_key]

    # -- both --------------------------------------------------------------------------------

    async def _decide(
        self,
        record: Record,
        shop: Shop,
        summary: ShopSummary,
        days: dict[int, DayCounts],
        today: int,
        cause: str,
        kinds: frozenset[AlertKind] = frozenset(AlertKind),
    ) -> AlertKind | None:
        """Store the shop's summary, after the alert its window calls for (of ``kinds``)."""
        counts = window_counts(days, today, self.thresholds)
        kind = transition(summary, counts, self.thresholds)
        if kind not in kinds:
            kind = None
        if kind is not None:
            summary = await self._alert(record, shop, summary, counts, kind, cause)
        encoded = sc.encode_summary(summary)
        if self.tables.summaries.get(shop.key()) != encoded:  # most verdicts change no summary
            self.tables.summaries[shop.key()] = encoded
        return kind

    async def _alert(
        self,
        record: Record,
        shop: Shop,
        summary: ShopSummary,
        counts: WindowCounts,
        kind: AlertKind,
        cause: str,
    ) -> ShopSummary:
        crossing = summary.crossings + (kind is AlertKind.RAISED)
        prefix = sc.kind_prefix(shop.key(), sc.LISTING)
        listings = sc.last_days_of(
            self.tables.scan(self.tables.risk, record.partition, prefix), shop.key(), sc.LISTING
        )
        alert = alert_record(
            shop,
            kind,
            cause,
            crossing,
            counts,
            self.thresholds,
            sample_listings(listings, counts.start_day, self.thresholds.sample_size),
            self.clock(),
        )
        log.info(
            "shop %s/%s: %s (%d takedowns, %d blocks in %d days), alert %s",
            shop.platform,
            shop.shop_id,
            kind,
            counts.takedowns,
            counts.blocks,
            self.thresholds.window_days,
            alert["alert_id"],
        )
        await self.send_alert(shop.key(), alert)
        self.metrics.shop_alerts.labels(str(kind)).inc()
        self.progress[f"shop_alerts_{kind.lower()}"] += 1
        return replace(
            summary,
            alerting=kind is AlertKind.RAISED,
            crossings=crossing,
            alert_offset=record.offset,
            last_alert=alert,
        )

    def _summary(self, key: bytes) -> ShopSummary | None:
        stored = self.tables.summaries.get(key)
        return None if stored is None else sc.decode_summary(stored)

    def _days(self, partition: int, key: bytes) -> dict[int, DayCounts]:
        prefix = sc.kind_prefix(key, sc.DAY)
        return sc.days_of(self.tables.scan(self.tables.risk, partition, prefix), key)


def _count_newest(counts: DayCounts, kind: bytes, n: int) -> DayCounts:
    if kind == sc.LISTING:
        return counts.with_newest(listings=n)
    return counts.with_newest(certificates=n)
