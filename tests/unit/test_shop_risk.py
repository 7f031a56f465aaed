"""Repeat offenders: the window arithmetic (pure), then the shop processor on dict tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import shop_codec
from streams.errors import InvalidRecordError
from streams.model import Verdict, VerdictAction, VerdictReason, VerdictTrigger
from streams.shop_risk import (
    DAY_MS,
    AlertKind,
    DayCounts,
    Offence,
    Shop,
    ShopSummary,
    Thresholds,
    alert_id,
    cst_day,
    iso_day,
    offence_of,
    sample_listings,
    transition,
    window_counts,
)
from tests.inprocess import InProcessShops, dict_scan

THRESHOLDS = Thresholds(takedowns=3, blocks=0, window_days=30, sample_size=10)
SHOP = Shop("jd", "S-1")


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).astimezone(UTC).timestamp() * 1000)


def day(iso_date: str) -> int:
    return cst_day(ms(f"{iso_date}T12:00:00+08:00"))


def verdict(
    listing: str = "L-1",
    action: VerdictAction = VerdictAction.TAKEDOWN,
    *,
    at: int,
    shop: Shop = SHOP,
    verdict_id: str | None = None,
    certs: tuple[str, ...] = ("2024010907000001",),
) -> Verdict:
    return Verdict(
        verdict_id=verdict_id or f"v-{listing}-{action}-{at}",
        listing_id=listing,
        platform=shop.platform,
        shop_id=shop.shop_id,
        action=action,
        reasons=(VerdictReason.CERTIFICATE_REVOKED,),
        cert_numbers=certs,
        failing_certs=certs,
        trigger=VerdictTrigger.CERTIFICATE_CHANGE,
        trigger_id="t",
        event_time=at,
        decided_at=at + 100,
    )


def offence(listing: str, on: int, action: VerdictAction = VerdictAction.TAKEDOWN) -> Offence:
    return Offence(f"v-{listing}-{on}", listing, action, ("CERTIFICATE_REVOKED",), ("C1",), on)


# -- pure ---------------------------------------------------------------------------------


def test_a_cst_day_begins_at_16_00_utc() -> None:
    assert iso_day(cst_day(ms("2026-12-03T15:59:59.999+00:00"))) == "2026-12-03"
    assert iso_day(cst_day(ms("2026-12-03T16:00:00.000+00:00"))) == "2026-12-04"
    assert iso_day(cst_day(ms("2026-12-04T00:00:00.000+08:00"))) == "2026-12-04"


def test_a_day_counts_for_exactly_window_days_days() -> None:
    counted = DayCounts().with_offence(offence("L-1", 100))
    assert window_counts({100: counted}, 100 + 29, THRESHOLDS).takedowns == 1  # its 30th day
    assert window_counts({100: counted}, 100 + 30, THRESHOLDS).takedowns == 0
    edge = window_counts({100: counted}, 129, THRESHOLDS)
    assert (edge.start_day, edge.end_day) == (100, 129)


def test_the_offence_day_is_the_event_time_never_after_the_decision() -> None:
    late_evening = verdict(at=ms("2026-12-01T23:30:00+08:00"))  # 15:30 UTC
    counted = offence_of(late_evening)
    assert counted is not None and iso_day(counted.day) == "2026-12-01"
    # A producer's clock far ahead: counted on the day it was decided.
    skewed = replace(late_evening, event_time=ms("2026-12-09T10:00:00+08:00"))
    counted = offence_of(skewed)
    assert counted is not None and counted.day == cst_day(skewed.decided_at)


def test_allow_and_restore_are_not_offences() -> None:
    at = ms("2026-12-01T10:00:00+08:00")
    assert offence_of(verdict(action=VerdictAction.ALLOW, at=at)) is None
    assert offence_of(verdict(action=VerdictAction.RESTORE, at=at)) is None
    assert offence_of(verdict(action=VerdictAction.BLOCK, at=at)) is not None


def test_thresholds_at_zero_are_not_used() -> None:
    counts = window_counts({5: DayCounts(blocks=9, takedowns=2)}, 5, Thresholds(3, 0, 30, 10))
    assert not Thresholds(3, 0, 30, 10).is_over(counts)
    assert Thresholds(0, 9, 30, 10).is_over(counts)
    assert Thresholds(2, 0, 30, 10).is_over(counts)


def test_a_shop_is_raised_once_and_cleared_once() -> None:
    over = window_counts({5: DayCounts(takedowns=3)}, 5, THRESHOLDS)
    under = window_counts({5: DayCounts(takedowns=2)}, 5, THRESHOLDS)
    assert transition(ShopSummary(5), over, THRESHOLDS) is AlertKind.RAISED
    assert transition(ShopSummary(5, alerting=True), over, THRESHOLDS) is None
    assert transition(ShopSummary(5, alerting=True), under, THRESHOLDS) is AlertKind.CLEARED
    assert transition(ShopSummary(5), under, THRESHOLDS) is None


def test_alert_ids_are_deterministic_and_differ_by_cause_and_kind() -> None:
    first = alert_id(SHOP, AlertKind.RAISED, "v-1")
    assert first == alert_id(SHOP, AlertKind.RAISED, "v-1")
    assert (
        len(
            {
                first,
                alert_id(SHOP, AlertKind.CLEARED, "v-1"),
                alert_id(SHOP, AlertKind.RAISED, "v-2"),
            }
        )
        == 3
    )
    assert first != alert_id(Shop("jd", "S-2"), AlertKind.RAISED, "v-1")


def test_the_sample_is_the_latest_offences_within_the_window() -> None:
    last_days = [("L-a", 10), ("L-b", 12), ("L-c", 11), ("L-old", 3), ("L-d", 12)]
    assert sample_listings(last_days, 5, 3) == ["L-b", "L-d", "L-c"]


def test_day_counts_and_summaries_round_trip_with_their_format_version() -> None:
    counts = DayCounts().with_offence(offence("L-1", 7)).with_newest(listings=1, certificates=2)
    assert shop_codec.decode_day(shop_codec.encode_day(counts)) == counts
    summary = ShopSummary(7, alerting=True, crossings=2, alert_offset=41, last_alert={"a": 1})
    assert shop_codec.decode_summary(shop_codec.encode_summary(summary)) == summary
    with pytest.raises(Exception, match="format"):
        shop_codec.decode_summary(b'{"fv": 99}')
    with pytest.raises(InvalidRecordError):
        shop_codec.decode_message(b"\xc3\x01 avro without the shop stream's prefix")
    with pytest.raises(InvalidRecordError):
        shop_codec.decode_message(b"VX" + b"an unknown action")
    avro = b"\xc3\x01 any"
    assert shop_codec.decode_message(shop_codec.verdict_message(VerdictAction.TAKEDOWN, avro)) == (
        VerdictAction.TAKEDOWN,
        avro,
    )


# -- the processor on dict tables -----------------------------------------------------------


def test_the_third_takedown_raises_one_alert_with_counts_window_and_sample() -> None:
    shops, at = InProcessShops(), ms("2026-12-01T09:00:00+08:00")
    shops.feed(verdict("L-1", at=at), verdict("L-2", at=at + 1))
    assert shops.alerts == []
    shops.feed(verdict("L-3", at=at + 2, certs=("2024010907000002",)))
    (alert,) = shops.alerts
    assert alert["kind"] == "RAISED" and alert["crossing"] == 1
    assert (alert["takedowns"], alert["blocks"]) == (3, 0)
    assert (alert["distinct_listings"], alert["distinct_certificates"]) == (3, 2)
    assert (alert["window_start"], alert["window_end"]) == ("2026-11-02", "2026-12-01")
    assert alert["by_reason"] == [
        {"action": "TAKEDOWN", "reason": "CERTIFICATE_REVOKED", "count": 3}
    ]
    assert set(alert["sample_listing_ids"]) == {"L-1", "L-2", "L-3"}  # type: ignore[call-overload]
    assert alert["cause"] == "v-L-3-TAKEDOWN-" + str(at + 2)
    shops.feed(verdict("L-4", at=at + 3))  # still over: no second alert
    assert len(shops.alerts) == 1


def test_a_repeated_verdict_counts_once_and_only_the_alerts_own_record_says_it_again() -> None:
    shops, at = InProcessShops(), ms("2026-12-01T09:00:00+08:00")
    first = [verdict(f"L-{n}", at=at + n) for n in range(3)]
    shops.feed(*first)
    assert len(shops.alerts) == 1
    shops.feed(*first)  # the same verdicts again, later in the stream (a re-decision)
    assert len(shops.alerts) == 1
    shops.process(2)  # the record that raised the alert, read again after a crash
    assert [a["alert_id"] for a in shops.alerts] == [shops.alerts[0]["alert_id"]] * 2
    shops.process(1)  # another one read again: nothing
    assert len(shops.alerts) == 2
    summary = shop_codec.decode_summary(shops.summaries[SHOP.key()])
    assert summary.crossings == 1


def test_a_listing_offending_on_several_days_counts_once_until_its_last_day_leaves() -> None:
    shops = InProcessShops(Thresholds(takedowns=99, blocks=0, window_days=30, sample_size=10))
    at = ms("2026-12-01T09:00:00+08:00")
    shops.feed(verdict("L-1", at=at))
    shops.days_later(10)
    shops.feed(verdict("L-1", VerdictAction.BLOCK, at=at + 10 * DAY_MS))
    days = {
        int(k[-7:]): shop_codec.decode_day(v)
        for k, v in shops.risk.items()
        if shop_codec.kind_of(SHOP.key(), k) == shop_codec.DAY
    }
    today = cst_day(shops.now)
    counts = window_counts(days, today, THRESHOLDS)
    assert (counts.listings, counts.takedowns, counts.blocks) == (1, 1, 1)
    later = window_counts(days, today + 25, THRESHOLDS)  # the first day has left
    assert (later.listings, later.takedowns, later.blocks) == (1, 0, 1)
    assert window_counts(days, today + 30, THRESHOLDS).listings == 0


def test_a_verdict_older_than_the_window_is_late_and_not_counted() -> None:
    shops = InProcessShops()
    old = shops.now - 30 * DAY_MS
    shops.feed(*(verdict(f"L-{n}", at=old) for n in range(3)))
    assert shops.alerts == [] and shops.summaries == {} and shops.risk == {}
    assert shops.late() == 3
    inside = shops.now - 29 * DAY_MS  # the window's first day
    shops.feed(*(verdict(f"L-{n}", at=inside) for n in range(3)))
    assert len(shops.alerts) == 1


def test_a_late_verdict_within_the_window_counts_on_its_own_day() -> None:
    shops = InProcessShops(Thresholds(takedowns=99, blocks=0, window_days=30, sample_size=10))
    shops.feed(verdict("L-1", at=shops.now))
    shops.feed(verdict("L-1", VerdictAction.BLOCK, at=shops.now - 5 * DAY_MS))  # arrives late
    keys = {k for k in shops.risk if shop_codec.kind_of(SHOP.key(), k) == shop_codec.DAY}
    assert len(keys) == 2
    mark = shops.risk[shop_codec.item_key(SHOP.key(), shop_codec.LISTING, "L-1")]
    assert shop_codec.decode_day_mark(mark) == cst_day(shops.now)  # still its last day


def test_days_leaving_the_window_clear_the_shop_then_it_is_forgotten() -> None:
    shops, at = InProcessShops(), ms("2026-12-01T09:00:00+08:00")
    shops.feed(*(verdict(f"L-{n}", at=at) for n in range(3)))
    shops.days_later(29)
    shops.process(shops.tick(SHOP))  # still inside: nothing
    assert len(shops.alerts) == 1
    shops.days_later(1)
    tick = shops.tick(SHOP)
    shops.process(tick)
    raised, cleared = shops.alerts
    assert cleared["kind"] == "CLEARED" and cleared["crossing"] == 1
    assert cleared["cause"] == "tick@2026-12-31" and cleared["takedowns"] == 0
    assert cleared["alert_id"] != raised["alert_id"]
    shops.process(tick)  # the tick read again after a crash: the same CLEARED again
    assert shops.alerts[-1] == cleared
    shops.process(shops.tick(SHOP))
    assert shops.summaries == {} and shops.risk == {}  # nothing left of the shop
    # It offends again: a new crossing, a new id.
    shops.feed(*(verdict(f"L-{n}", at=shops.now + n) for n in range(3)))
    assert shops.alerts[-1]["kind"] == "RAISED"
    assert shops.alerts[-1]["alert_id"] != raised["alert_id"]


def test_another_shops_verdicts_change_nothing() -> None:
    shops, at = InProcessShops(), ms("2026-12-01T09:00:00+08:00")
    other = Shop("jd", "S-2")
    shops.feed(verdict("L-1", at=at), verdict("L-2", at=at))
    shops.feed(*(verdict(f"O-{n}", at=at, shop=other) for n in range(2)))
    shops.feed(
        verdict("L-9", VerdictAction.ALLOW, at=at), verdict("L-8", VerdictAction.RESTORE, at=at)
    )
    assert shops.alerts == []
    shops.feed(verdict("O-3", at=at, shop=other))
    (alert,) = shops.alerts
    assert (alert["shop_id"], alert["takedowns"]) == ("S-2", 3)
    assert not shop_codec.decode_summary(shops.summaries[SHOP.key()]).alerting


def test_an_alert_whose_send_died_goes_out_when_its_record_is_read_again() -> None:
    # The counts were stored, the summary and the alert were not: the worker died in between.
    shops, at = InProcessShops(), ms("2026-12-01T09:00:00+08:00")
    shops.feed(verdict("L-1", at=at), verdict("L-2", at=at))
    third = shops.append(verdict("L-3", at=at))
    shops.failing_sends = 1
    with pytest.raises(ConnectionError):
        shops.process(third)
    assert shops.alerts == []
    shops.process(third)  # read again from the last commit
    (alert,) = shops.alerts
    assert alert["kind"] == "RAISED" and alert["cause"] == f"v-L-3-TAKEDOWN-{at}"
    assert alert["takedowns"] == 3  # counted once, not again
    shops.process(third)  # and once more: the summary now names it, the same alert
    assert [a["alert_id"] for a in shops.alerts] == [alert["alert_id"]] * 2


def test_a_repeat_does_not_clear_a_shop_only_a_tick_does() -> None:
    shops, at = InProcessShops(), ms("2026-12-01T09:00:00+08:00")
    first = [verdict(f"L-{n}", at=at) for n in range(3)]
    shops.feed(*first)
    shops.days_later(30)  # every counted day has left the window; no tick yet
    shops.feed(first[0])  # late now: not counted, and no CLEARED named after it
    assert [a["kind"] for a in shops.alerts] == ["RAISED"]
    shops.process(shops.tick(SHOP))
    assert [a["kind"] for a in shops.alerts] == ["RAISED", "CLEARED"]


def test_a_verdict_decided_on_a_clock_ahead_counts_today() -> None:
    shops = InProcessShops(Thresholds(takedowns=1, blocks=0, window_days=30, sample_size=10))
    tomorrow = shops.now + DAY_MS
    v = verdict("L-1", at=tomorrow)
    shops.feed(v)
    (alert,) = shops.alerts
    assert alert["window_end"] == iso_day(cst_day(shops.now)) and alert["takedowns"] == 1


# A step: move the clock on (days), tick the shop, or a verdict (listing, takedown?, days ago,
# certificate).
_STEP = st.one_of(
    st.tuples(st.just("later"), st.integers(1, 6)),
    st.tuples(st.just("tick")),
    st.tuples(
        st.just("verdict"),
        st.integers(1, 6),
        st.booleans(),
        st.integers(0, 40),
        st.integers(1, 4),
    ),
)


@given(st.lists(_STEP, max_size=60))
@settings(max_examples=150, deadline=None)
def test_window_counts_match_a_recount_of_every_verdict_inside_the_window(
    steps: list[tuple[object, ...]],
) -> None:
    """Whatever the order, repeats, lateness and ticks: the stored counts are those of the
    distinct verdicts whose day is inside today's window, recounted from scratch."""
    shops = InProcessShops(Thresholds(takedowns=999, blocks=0, window_days=30, sample_size=10))
    counted: dict[str, tuple[str, tuple[str, ...], int, bool]] = {}
    for step in steps:
        if step[0] == "later":
            shops.days_later(int(step[1]))  # type: ignore[call-overload]
        elif step[0] == "tick":
            shops.process(shops.tick(SHOP))
        else:
            _, n, takedown, back, cert = step
            at = shops.now - int(back) * DAY_MS  # type: ignore[call-overload]
            action = VerdictAction.TAKEDOWN if takedown else VerdictAction.BLOCK
            v = verdict(f"L-{n}", action, at=at, certs=(f"C-{cert}",))
            day, today = cst_day(at), cst_day(shops.now)
            if day >= today - 29 and v.verdict_id not in counted:
                counted[v.verdict_id] = (v.listing_id, v.failing_certs, day, bool(takedown))
            shops.feed(v)
        today = cst_day(shops.now)
        days = shop_codec.days_of(
            dict_scan(shops.risk, 0, shop_codec.kind_prefix(SHOP.key(), shop_codec.DAY)),
            SHOP.key(),
        )
        counts = window_counts(days, today, THRESHOLDS)
        inside = [c for c in counted.values() if today - 29 <= c[2] <= today]
        assert counts.takedowns == sum(c[3] for c in inside)
        assert counts.blocks == sum(not c[3] for c in inside)
        assert counts.listings == len({c[0] for c in inside})
        assert counts.certificates == len({cert for c in inside for cert in c[1]})
