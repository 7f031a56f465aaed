"""Repeat offenders: how often a shop's listings were blocked or taken down over a rolling
window of China Standard Time days, and when that crosses a platform's threshold.

Pure: no Kafka, no tables. ``streams/shop_processor.py`` reads and writes the state around it.

Time. Each BLOCK or TAKEDOWN counts on the CST day of its event time (a listing event's
occurred_at, a certificate change's changed_at), never later than the day it was decided, so a
producer's clock running ahead cannot push a shop's window forward. The window is the last
``window_days`` CST days up to the day being processed (today): a verdict older than that is
late and not counted, and a day that leaves the window takes its counts with it.

Distinct listings (and certificates) over a window that slides cannot be summed from per-day
distinct counts. Each listing keeps the last day it offended, and each day counts the listings
whose last offence it is (``DayCounts.newest_listings``): a listing offending again moves from
its old day to the new one. The sum over the window's days is then exact.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from streams.model import Verdict, VerdictAction

CST_OFFSET_MS = 8 * 3_600_000  # China Standard Time is UTC+8 all year, with no summer time
DAY_MS = 86_400_000
OFFENCES = (VerdictAction.BLOCK, VerdictAction.TAKEDOWN)
_EPOCH = dt.date(1970, 1, 1)
_ALERT_NAMESPACE = uuid.UUID("5e0c6b1e-8a43-4f0e-9c1a-6c2f0b7d3a91")


def cst_day(ms: int) -> int:
    """The CST day (days since 1970-01-01) of a time in ms since the epoch."""
    return (ms + CST_OFFSET_MS) // DAY_MS


def iso_day(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


class AlertKind(StrEnum):
    RAISED = "RAISED"  # the shop crossed a threshold
    CLEARED = "CLEARED"  # back under every threshold


@dataclass(frozen=True, slots=True)
class Shop:
    """A shop: shop ids are unique only within a platform."""

    platform: str
    shop_id: str

    def key(self) -> bytes:
        # NUL never occurs in an accepted id (validation refuses control characters).
        return f"{self.platform}\x00{self.shop_id}".encode()

    @classmethod
    def from_key(cls, key: bytes) -> Shop:
        platform, _, shop_id = key.decode().partition("\x00")
        return cls(platform, shop_id)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A shop is over when any enabled threshold (> 0) is reached within the window."""

    takedowns: int
    blocks: int
    window_days: int
    sample_size: int  # listing ids an alert carries

    def is_over(self, counts: WindowCounts) -> bool:
        return (0 < self.takedowns <= counts.takedowns) or (0 < self.blocks <= counts.blocks)

    def window_start(self, today: int) -> int:
        return today - self.window_days + 1


@dataclass(frozen=True, slots=True)
class Offence:
    """A BLOCK or TAKEDOWN verdict, as the shop's counts see it."""

    verdict_id: str
    listing_id: str
    action: VerdictAction
    reasons: tuple[str, ...]
    certificates: tuple[str, ...]  # the failing ones
    day: int


def offence_of(verdict: Verdict) -> Offence | None:
    """The offence a verdict counts as, or None for ALLOW and RESTORE."""
    if verdict.action not in OFFENCES:
        return None
    return Offence(
        verdict.verdict_id,
        verdict.listing_id,
        verdict.action,
        tuple(str(r) for r in verdict.reasons),
        verdict.failing_certs,
        cst_day(min(verdict.event_time, verdict.decided_at)),
    )


@dataclass(frozen=True, slots=True)
class DayCounts:
    """One shop's offences on one CST day."""

    blocks: int = 0
    takedowns: int = 0
    by_reason: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (action, reason)
    newest_listings: int = 0  # listings whose last offence is this day
    newest_certificates: int = 0

    def with_offence(self, offence: Offence) -> DayCounts:
        by_reason = Counter(self.by_reason)
        by_reason.update((str(offence.action), reason) for reason in offence.reasons)
        takedown = offence.action is VerdictAction.TAKEDOWN
        return replace(
            self,
            blocks=self.blocks + (not takedown),
            takedowns=self.takedowns + takedown,
            by_reason=dict(by_reason),
        )

    def with_newest(self, listings: int = 0, certificates: int = 0) -> DayCounts:
        return replace(
            self,
            newest_listings=self.newest_listings + listings,
            newest_certificates=self.newest_certificates + certificates,
        )


@dataclass(frozen=True, slots=True)
class WindowCounts:
    start_day: int
    end_day: int
    blocks: int = 0
    takedowns: int = 0
    by_reason: Mapping[tuple[str, str], int] = field(default_factory=dict)
    listings: int = 0  # distinct listings with an offence in the window
    certificates: int = 0  # distinct failing certificates

    def as_record(self) -> dict[str, object]:
        return {
            "window_start": iso_day(self.start_day),
            "window_end": iso_day(self.end_day),
            "window_days": self.end_day - self.start_day + 1,
            "blocks": self.blocks,
            "takedowns": self.takedowns,
            "by_reason": [
                {"action": action, "reason": reason, "count": n}
                for (action, reason), n in sorted(self.by_reason.items())
            ],
            "distinct_listings": self.listings,
            "distinct_certificates": self.certificates,
        }


def window_counts(
    days: Mapping[int, DayCounts], today: int, thresholds: Thresholds
) -> WindowCounts:
    """The shop's counts over the window ending ``today``, from its days' counts."""
    start = thresholds.window_start(today)
    inside = [counts for day, counts in days.items() if start <= day <= today]
    by_reason: Counter[tuple[str, str]] = Counter()
    for counts in inside:
        by_reason.update(counts.by_reason)
    return WindowCounts(
        start,
        today,
        blocks=sum(c.blocks for c in inside),
        takedowns=sum(c.takedowns for c in inside),
        by_reason=dict(by_reason),
        listings=sum(c.newest_listings for c in inside),
        certificates=sum(c.newest_certificates for c in inside),
    )


@dataclass(frozen=True, slots=True)
class ShopSummary:
    """What a shop's alerts need to be said once per crossing, and again on a replay."""

    # No later than the earliest day with counts: once it leaves the window, tick the shop.
    oldest_day: int
    alerting: bool = False
    crossings: int = 0  # RAISED alerts so far
    # The input record (offset on the shop's partition) that caused the latest alert, and
    # that alert: read again after a crash, that record sends the same alert again.
    alert_offset: int = -1
    last_alert: Mapping[str, object] | None = None


def transition(
    summary: ShopSummary, counts: WindowCounts, thresholds: Thresholds
) -> AlertKind | None:
    """RAISED when the shop goes over a threshold, CLEARED when it falls back under all."""
    over = thresholds.is_over(counts)
    if over and not summary.alerting:
        return AlertKind.RAISED
    if not over and summary.alerting:
        return AlertKind.CLEARED
    return None


def alert_id(shop: Shop, kind: AlertKind, cause: str) -> str:
    """Deterministic. ``cause`` is what crossed: the id of the verdict that was counted, or
    ``tick@<day>`` for a day leaving the window. Each verdict is counted once per shop and a
    day leaves a window once, so an id never recurs, even after the shop's state expired."""
    return str(
        uuid.uuid5(_ALERT_NAMESPACE, f"{shop.platform}\x1f{shop.shop_id}\x1f{kind}\x1f{cause}")
    )


def tick_cause(today: int) -> str:
    return f"tick@{iso_day(today)}"


def sample_listings(last_days: Iterable[tuple[str, int]], start_day: int, size: int) -> list[str]:
    """Up to ``size`` listing ids offending within the window, the latest first."""
    inside = sorted(((-day, listing) for listing, day in last_days if day >= start_day))
    return [listing for _, listing in inside[:size]]


def alert_record(
    shop: Shop,
    kind: AlertKind,
    cause: str,
    crossing: int,
    counts: WindowCounts,
    thresholds: Thresholds,
    sample: list[str],
    decided_at: int,
) -> dict[str, object]:
    """A ``ccc.guard.ShopAlert`` record."""
    return {
        "alert_id": alert_id(shop, kind, cause),
        "kind": str(kind),
        "platform": shop.platform,
        "shop_id": shop.shop_id,
        "crossing": crossing,
        **counts.as_record(),
        "threshold_takedowns": thresholds.takedowns,
        "threshold_blocks": thresholds.blocks,
        "sample_listing_ids": sample,
        "cause": cause,
        "decided_at": decided_at,
    }
