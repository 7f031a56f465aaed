"""The re-ask tracker: due times, back-off, the per-round cap, rebuilds after a rebalance."""

from __future__ import annotations

from streams.listing_side import ListingState, PendingCheck
from streams.reask import MAX_WAIT_S, AwaitingTracker
from streams.state_codec import encode_listing, may_await_answers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def tracker(after_s: float = 30.0) -> tuple[AwaitingTracker, FakeClock]:
    clock = FakeClock()
    return AwaitingTracker(after_s, clock), clock


def test_a_listing_is_due_after_the_wait_and_not_before() -> None:
    awaiting, clock = tracker()
    awaiting.track(b"L-1", awaiting=True)
    clock.now += 29.9
    assert awaiting.due(10) == []
    clock.now += 0.1
    assert awaiting.due(10) == [b"L-1"]


def test_an_answered_listing_is_forgotten() -> None:
    awaiting, clock = tracker()
    awaiting.track(b"L-1", awaiting=True)
    awaiting.track(b"L-1", awaiting=False)
    clock.now += 60
    assert awaiting.due(10) == [] and len(awaiting) == 0


def test_a_running_clock_is_not_restarted_by_later_changes() -> None:
    awaiting, clock = tracker()
    awaiting.track(b"L-1", awaiting=True)
    clock.now += 20
    awaiting.track(b"L-1", awaiting=True)  # answered one certificate, awaits another
    clock.now += 10
    assert awaiting.due(10) == [b"L-1"]


def test_reasks_back_off_doubling_up_to_the_cap() -> None:
    awaiting, clock = tracker(after_s=100.0)
    awaiting.track(b"L-1", awaiting=True)
    waits = []
    for _ in range(6):
        started = clock.now
        while awaiting.due(1) == []:
            clock.now += 1
        waits.append(clock.now - started)
        awaiting.asked(b"L-1")
    assert waits == [100, 200, 400, MAX_WAIT_S, MAX_WAIT_S, MAX_WAIT_S]


def test_a_round_takes_the_longest_overdue_first_up_to_the_limit() -> None:
    awaiting, clock = tracker()
    for n in range(5):
        awaiting.track(f"L-{n}".encode(), awaiting=True)
        clock.now += 1
    clock.now += 30
    assert awaiting.due(2) == [b"L-0", b"L-1"]


def test_a_rebuild_keeps_running_clocks_and_drops_listings_no_longer_here() -> None:
    awaiting, clock = tracker()
    awaiting.track(b"kept", awaiting=True)
    awaiting.track(b"moved", awaiting=True)
    clock.now += 20
    awaiting.replace([b"kept", b"recovered"])
    assert b"moved" not in awaiting
    clock.now += 10
    assert awaiting.due(10) == [b"kept"]
    clock.now += 20
    assert awaiting.due(10) == [b"kept", b"recovered"]


def test_the_cheap_awaiting_check_agrees_with_decoding() -> None:
    idle = ListingState("jd", "S-1", "0907", claimed=("2017010907948411",))
    waiting = ListingState(
        "jd",
        "S-1",
        "0907",
        claimed=("2017010907948411",),
        pending=[PendingCheck("E1", 0, ("2017010907948411",), "0907")],
        awaiting={"2017010907948411": "0a1b2c3d"},
    )
    assert not may_await_answers(encode_listing(idle))
    assert may_await_answers(encode_listing(waiting))


def test_a_rebuild_keeps_listings_that_began_waiting_during_the_scan() -> None:
    awaiting, clock = tracker()
    awaiting.track(b"before", awaiting=True)
    clock.now += 5
    scan_started = clock()
    awaiting.track(b"during", awaiting=True)  # the scan had already passed its key
    awaiting.replace([], tracked_since=scan_started)
    assert b"during" in awaiting and b"before" not in awaiting


def test_a_watch_subscribes_again_at_most_once_per_wait() -> None:
    awaiting, clock = tracker(after_s=30.0)
    watch = b"2017010907948411\x003"
    assert awaiting.resubscribe_due(watch)
    clock.now += 29
    assert not awaiting.resubscribe_due(watch)  # another claimer asking again in the window
    assert awaiting.resubscribe_due(b"2017010907948411\x004")  # another partition's watch
    clock.now += 1
    assert awaiting.resubscribe_due(watch)
