"""The listing side's state machine: subscriptions, pending checks, re-checks, replays."""

from __future__ import annotations

from streams.clock import DAY_MS
from streams.listing_side import (
    RECENT_VERDICTS,
    ListingState,
    Outcome,
    on_certificate_answer,
    on_listing_event,
    on_recheck,
    reask,
)
from streams.model import (
    CertificateStatus,
    CertTrigger,
    CertView,
    ListingEvent,
    ListingEventType,
    VerdictAction,
    VerdictReason,
    VerdictTrigger,
)

A, B, C = "2017010907948411", "2016010907878416", "2019010907148672"
LID = "L-1"
FAR = 30_000  # days since 1970: 2052
T0 = 1_790_000_000_000


def event(
    event_id: str,
    certs: tuple[str, ...],
    kind: ListingEventType = ListingEventType.CREATED,
    at: int = T0,
    category: str | None = "0907",
) -> ListingEvent:
    return ListingEvent(event_id, kind, "jd", LID, "S-1", category, certs, at)


def valid(version: int = 1) -> CertView:
    return CertView(CertificateStatus.VALID, version, "0907", FAR)


def revoked(version: int = 2) -> CertView:
    return CertView(CertificateStatus.REVOKED, version, "0907", FAR)


def answered(outcome: Outcome, *answers: tuple[str, CertView | None]) -> Outcome:
    for cert_no, view in answers:
        outcome = on_certificate_answer(outcome.state, LID, cert_no, view, T0)
    return outcome


def created_live(*certs: str) -> ListingState:
    outcome = answered(
        on_listing_event(None, event("E1", certs), T0), *[(c, valid()) for c in certs]
    )
    assert [v.action for v in outcome.verdicts] == [VerdictAction.ALLOW]
    assert outcome.state is not None
    return outcome.state


def test_created_subscribes_and_waits_for_answers() -> None:
    outcome = on_listing_event(None, event("E1", (A, B)), T0)
    assert outcome.subscribe == [A, B]
    assert outcome.verdicts == []
    outcome = on_certificate_answer(outcome.state, LID, A, valid(), T0)
    assert outcome.verdicts == []  # B still unanswered
    outcome = on_certificate_answer(outcome.state, LID, B, valid(), T0)
    [verdict] = outcome.verdicts
    assert verdict.action is VerdictAction.ALLOW
    assert verdict.trigger is VerdictTrigger.LISTING_EVENT and verdict.trigger_id == "E1"
    assert verdict.event_time == T0 and verdict.cert_numbers == (A, B)


def test_no_or_malformed_certificates_are_decided_at_once_without_subscribing() -> None:
    outcome = on_listing_event(None, event("E1", ()), T0)
    assert outcome.subscribe == []
    assert [(v.action, v.reasons) for v in outcome.verdicts] == [
        (VerdictAction.BLOCK, (VerdictReason.NO_CERTIFICATE,))
    ]
    outcome = on_listing_event(None, event("E1", ("2O17010907948411",)), T0)
    assert outcome.subscribe == []
    assert outcome.verdicts[0].reasons == (VerdictReason.INVALID_CERTIFICATE_NUMBER,)


def test_unknown_certificate_blocks_then_valid_arrival_restores() -> None:
    outcome = answered(on_listing_event(None, event("E1", (A,)), T0), (A, None))
    assert outcome.verdicts[0].reasons == (VerdictReason.CERTIFICATE_NOT_FOUND,)
    outcome = on_recheck(
        outcome.state,
        LID,
        CertTrigger(A, valid(), VerdictTrigger.CERTIFICATE_CHANGE, f"{A}@1", T0 + 5),
        T0 + 6,
    )
    [verdict] = outcome.verdicts
    assert verdict.action is VerdictAction.RESTORE
    assert verdict.trigger_id == f"{A}@1" and verdict.event_time == T0 + 5
    assert outcome.state is not None and outcome.state.live


def test_revocation_takes_down_a_live_listing_once() -> None:
    state = created_live(A, B)
    outcome = on_recheck(
        state, LID, CertTrigger(A, revoked(), VerdictTrigger.CERTIFICATE_CHANGE, f"{A}@2", T0), T0
    )
    [verdict] = outcome.verdicts
    assert verdict.action is VerdictAction.TAKEDOWN
    assert verdict.reasons == (VerdictReason.CERTIFICATE_REVOKED,)
    assert verdict.failing_certs == (A,)
    # A second, different failing change speaks no more: the listing is already down.
    outcome = on_recheck(
        outcome.state,
        LID,
        CertTrigger(B, revoked(3), VerdictTrigger.CERTIFICATE_CHANGE, f"{B}@3", T0),
        T0,
    )
    assert outcome.verdicts == []
    assert outcome.state is not None and outcome.state.failing == (A, B)


def test_restoring_one_of_two_bad_certificates_does_not_restore() -> None:
    state = created_live(A, B)
    for cert_no, tid in ((A, "a2"), (B, "b2")):
        state = on_recheck(
            state,
            LID,
            CertTrigger(cert_no, revoked(), VerdictTrigger.CERTIFICATE_CHANGE, tid, T0),
            T0,
        ).state  # type: ignore[assignment]
    outcome = on_recheck(
        state, LID, CertTrigger(A, valid(3), VerdictTrigger.CERTIFICATE_CHANGE, "a3", T0), T0
    )
    assert outcome.verdicts == []
    outcome = on_recheck(
        outcome.state,
        LID,
        CertTrigger(B, valid(3), VerdictTrigger.CERTIFICATE_CHANGE, "b3", T0),
        T0,
    )
    assert [v.action for v in outcome.verdicts] == [VerdictAction.RESTORE]


def test_replayed_listing_event_re_emits_the_same_verdict_and_changes_nothing() -> None:
    state = created_live(A)
    outcome = on_listing_event(state, event("E1", (A,)), T0 + 99)
    assert not outcome.changed and outcome.subscribe == []
    assert [v.verdict_id for v in outcome.verdicts] == [state.last_verdict.verdict_id]  # type: ignore[union-attr]


def test_replayed_recheck_re_emits_the_takedown() -> None:
    state = created_live(A)
    first = on_recheck(
        state, LID, CertTrigger(A, revoked(), VerdictTrigger.CERTIFICATE_CHANGE, "a2", T0), T0
    )
    again = on_recheck(
        first.state,
        LID,
        CertTrigger(A, revoked(), VerdictTrigger.CERTIFICATE_CHANGE, "a2", T0),
        T0 + 1,
    )
    assert [v.verdict_id for v in again.verdicts] == [v.verdict_id for v in first.verdicts]
    assert not again.changed


def test_update_swapping_certificates_moves_the_subscriptions() -> None:
    state = created_live(A, B)
    outcome = on_listing_event(state, event("E2", (B, C), ListingEventType.UPDATED), T0 + 1)
    assert outcome.subscribe == [C] and outcome.unsubscribe == [A]
    assert outcome.verdicts == []
    outcome = on_certificate_answer(outcome.state, LID, C, revoked(), T0)
    assert [(v.action, v.failing_certs) for v in outcome.verdicts] == [(VerdictAction.BLOCK, (C,))]
    # A re-check of the certificate no longer claimed is ignored.
    late = on_recheck(
        outcome.state,
        LID,
        CertTrigger(A, revoked(), VerdictTrigger.CERTIFICATE_CHANGE, "a2", T0),
        T0,
    )
    assert late.verdicts == [] and not late.changed


def test_update_keeping_certificates_is_decided_immediately() -> None:
    state = created_live(A)
    outcome = on_listing_event(
        state, event("E2", (A,), ListingEventType.UPDATED, category="0713"), T0
    )
    assert outcome.subscribe == []
    assert [(v.action, v.reasons) for v in outcome.verdicts] == [
        (VerdictAction.BLOCK, (VerdictReason.CATEGORY_MISMATCH,))
    ]


def test_events_arriving_while_pending_are_each_decided_in_order() -> None:
    first = on_listing_event(None, event("E1", (A,)), T0)
    second = on_listing_event(first.state, event("E2", (B,), ListingEventType.UPDATED), T0 + 1)
    assert second.subscribe == [B] and second.unsubscribe == [A]
    # B answers first, but E1 (waiting on A) is decided first.
    outcome = on_certificate_answer(second.state, LID, B, revoked(), T0)
    assert outcome.verdicts == []
    outcome = on_certificate_answer(outcome.state, LID, A, valid(), T0)
    assert [(v.trigger_id, v.action) for v in outcome.verdicts] == [
        ("E1", VerdictAction.ALLOW),
        ("E2", VerdictAction.BLOCK),
    ]
    assert outcome.state is not None and not outcome.state.live
    assert set(outcome.state.views) == {B}  # A's view was only kept for E1


def test_delisted_leaves_all_state_but_a_tombstone_and_unsubscribes() -> None:
    state = created_live(A, B)
    outcome = on_listing_event(state, event("E2", (), ListingEventType.DELISTED), T0)
    assert outcome.verdicts == [] and outcome.unsubscribe == [A, B]
    tomb = outcome.state
    assert tomb is not None and tomb.delisted
    assert (tomb.claimed, tomb.views, tomb.pending) == ((), {}, [])
    change = VerdictTrigger.CERTIFICATE_CHANGE
    assert on_recheck(tomb, LID, CertTrigger(A, revoked(), change, "a2", T0), T0).verdicts == []
    # A replay of the listing's older event after a crash does not bring it back; its verdict,
    # which the crash may have lost, is said again.
    replay = on_listing_event(tomb, event("E1", (A, B)), T0)
    assert [(v.trigger_id, v.action) for v in replay.verdicts] == [("E1", VerdictAction.ALLOW)]
    assert replay.subscribe == [] and not replay.changed


def test_delisted_while_pending_still_answers_the_pending_event_then_goes() -> None:
    first = on_listing_event(None, event("E1", (A,)), T0)
    gone = on_listing_event(first.state, event("E2", (), ListingEventType.DELISTED), T0)
    assert gone.state is not None and gone.unsubscribe == [A]
    outcome = on_certificate_answer(gone.state, LID, A, valid(), T0)
    assert [v.trigger_id for v in outcome.verdicts] == ["E1"]
    assert outcome.state is not None and outcome.state.delisted and not outcome.state.views


def test_older_certificate_versions_never_overwrite_newer_ones() -> None:
    state = created_live(A)
    outcome = on_recheck(
        state, LID, CertTrigger(A, revoked(0), VerdictTrigger.CERTIFICATE_CHANGE, "old", T0), T0
    )
    assert outcome.verdicts == [] and not outcome.changed


def test_recheck_while_an_event_is_pending_lets_the_event_speak() -> None:
    state = created_live(A)
    pending = on_listing_event(state, event("E2", (A, B), ListingEventType.UPDATED), T0)
    outcome = on_recheck(
        pending.state,
        LID,
        CertTrigger(A, revoked(), VerdictTrigger.CERTIFICATE_CHANGE, "a2", T0),
        T0,
    )
    assert outcome.verdicts == []
    outcome = on_certificate_answer(outcome.state, LID, B, valid(), T0)
    assert [(v.trigger_id, v.action, v.reasons) for v in outcome.verdicts] == [
        ("E2", VerdictAction.BLOCK, (VerdictReason.CERTIFICATE_REVOKED,))
    ]


def test_expiry_is_decided_at_the_trigger_time() -> None:
    expiring = CertView(CertificateStatus.VALID, 1, "0907", 20_000)  # 2024-10-04
    outcome = answered(
        on_listing_event(None, event("E1", (A,), at=20_000 * DAY_MS), T0), (A, expiring)
    )
    assert outcome.verdicts[0].action is VerdictAction.ALLOW
    after = 20_001 * DAY_MS
    outcome = on_recheck(
        outcome.state,
        LID,
        CertTrigger(A, expiring, VerdictTrigger.CERTIFICATE_EXPIRY, f"{A}@expiry", after),
        after,
    )
    assert [(v.action, v.reasons) for v in outcome.verdicts] == [
        (VerdictAction.TAKEDOWN, (VerdictReason.CERTIFICATE_EXPIRED,))
    ]


def test_duplicate_of_a_pending_event_asks_again_and_is_decided_once() -> None:
    first = on_listing_event(None, event("E1", (A,)), T0)
    again = on_listing_event(first.state, event("E1", (A,)), T0)
    # The first subscription may have died with a crash: it is sent again (idempotent there).
    assert not again.changed and again.subscribe == [A] and again.verdicts == []
    outcome = on_certificate_answer(again.state, LID, A, valid(), T0)
    assert [v.trigger_id for v in outcome.verdicts] == ["E1"]


def test_reask_repeats_every_awaited_subscription_with_its_token() -> None:
    first = on_listing_event(None, event("E1", (A, B)), T0)
    dropped = on_listing_event(first.state, event("E2", (B,), ListingEventType.UPDATED), T0)
    assert dropped.unsubscribe == [A]  # A is still awaited: E1's check needs it
    assert dropped.state is not None
    again = reask(dropped.state)
    assert not again.changed and again.verdicts == []
    assert sorted(again.subscribe) == sorted([A, B]) and again.tokens == first.tokens
    assert again.unsubscribe == [A]  # asked for E1's sake only: the claim index stays right
    outcome = answered(again, (A, valid()), (B, valid()))
    assert [v.trigger_id for v in outcome.verdicts] == ["E1", "E2"]
    assert outcome.state is not None and reask(outcome.state).subscribe == []


def test_a_second_answer_to_a_reasked_subscription_is_stale() -> None:
    first = on_listing_event(None, event("E1", (A,)), T0)
    token = first.tokens[A]
    once = on_certificate_answer(first.state, LID, A, valid(), T0, token)
    twice = on_certificate_answer(once.state, LID, A, revoked(), T0, token)
    assert [v.action for v in once.verdicts] == [VerdictAction.ALLOW]
    assert not twice.changed and twice.verdicts == []


def test_a_replayed_older_event_says_its_verdict_again_then_the_latest() -> None:
    state = created_live(A)
    first = on_listing_event(None, event("E1", (A,)), T0)
    original = answered(first, (A, valid())).verdicts[0]
    blocked = on_listing_event(state, event("E2", (), ListingEventType.UPDATED), T0)
    [latest] = blocked.verdicts
    replay = on_listing_event(blocked.state, event("E1", (A,)), T0)
    # E1's verdict may have died with a crash: the same verdict again (same id, same content),
    # then E2's, so the topic's last word on the listing is still its current decision.
    assert replay.verdicts == [original, latest] and not replay.changed
    assert on_listing_event(blocked.state, event("E2", ()), T0).verdicts == [latest]


def test_only_the_latest_verdicts_are_kept_for_replays() -> None:
    outcome = on_listing_event(None, event("E0", ()), T0)
    for n in range(1, RECENT_VERDICTS + 3):
        outcome = on_listing_event(outcome.state, event(f"E{n}", ()), T0 + n)
    assert outcome.state is not None
    assert len(outcome.state.decided) == RECENT_VERDICTS
    assert on_listing_event(outcome.state, event("E0", ()), T0).verdicts == []
    assert [
        v.trigger_id for v in on_listing_event(outcome.state, event("E5", ()), T0).verdicts
    ] == [
        "E5",
        f"E{RECENT_VERDICTS + 2}",
    ]


def test_an_event_delivered_after_a_newer_one_is_decided_but_changes_nothing() -> None:
    first = answered(on_listing_event(None, event("E1", (A,)), T0, offset=10), (A, valid()))
    newer = on_listing_event(
        first.state, event("E3", (), ListingEventType.UPDATED, at=T0 + 2), T0, offset=12
    )
    [current] = newer.verdicts
    assert current.action is VerdictAction.BLOCK
    late = on_listing_event(
        newer.state, event("E2", (B,), ListingEventType.UPDATED, at=T0 + 1), T0, offset=11
    )
    # B is not held: asked for with E2's token, and let go again (E3 claims nothing).
    assert late.subscribe == [B] and late.unsubscribe == [B] and late.verdicts == []
    decided = on_certificate_answer(late.state, LID, B, valid(), T0, late.tokens[B])
    assert [(v.trigger_id, v.action) for v in decided.verdicts] == [
        ("E2", VerdictAction.ALLOW),
        ("E3", VerdictAction.BLOCK),  # said again: the listing's last word stays current
    ]
    assert decided.state is not None
    assert decided.state.claimed == () and not decided.state.live
    assert decided.state.last_verdict == current
    # Read once more after a crash: a replay, said again the same way.
    again = on_listing_event(decided.state, event("E2", (B,)), T0, offset=11)
    assert [v.verdict_id for v in again.verdicts] == [v.verdict_id for v in decided.verdicts]


def test_a_lower_offset_with_a_newer_time_is_a_new_event_not_a_late_one() -> None:
    """A recreated topic starts its offsets again: events newer than the state still apply."""
    first = answered(on_listing_event(None, event("E1", (A,)), T0, offset=500), (A, valid()))
    fresh = on_listing_event(
        first.state, event("E2", (), ListingEventType.UPDATED, at=T0 + 5), T0, offset=3
    )
    assert fresh.state is not None and fresh.state.claimed == ()
    assert [v.trigger_id for v in fresh.verdicts] == ["E2"]


def test_a_late_delisting_changes_nothing() -> None:
    live = on_listing_event(None, event("E1", (A,)), T0, offset=10)
    live = answered(live, (A, valid()))
    late = on_listing_event(live.state, event("E0", (), ListingEventType.DELISTED), T0, offset=9)
    assert late.verdicts == [] and late.state is not None and late.state.live


def test_a_late_check_waiting_for_an_answer_does_not_hold_up_a_takedown() -> None:
    live = answered(on_listing_event(None, event("E1", (A,)), T0, offset=10), (A, valid()))
    late = on_listing_event(live.state, event("E0", (B,)), T0, offset=5)
    assert late.subscribe == [B] and late.verdicts == []
    change = VerdictTrigger.CERTIFICATE_CHANGE
    takedown = on_recheck(late.state, LID, CertTrigger(A, revoked(), change, "A@2", T0), T0)
    assert [v.action for v in takedown.verdicts] == [VerdictAction.TAKEDOWN]
    decided = on_certificate_answer(takedown.state, LID, B, valid(), T0, late.tokens[B])
    assert [(v.trigger_id, v.action) for v in decided.verdicts] == [
        ("E0", VerdictAction.ALLOW),
        ("A@2", VerdictAction.TAKEDOWN),
    ]
    assert decided.state is not None and not decided.state.live


def test_a_replay_after_delisting_ends_on_the_listings_last_decision() -> None:
    state = created_live(A)
    change = VerdictTrigger.CERTIFICATE_CHANGE
    down = on_recheck(state, LID, CertTrigger(A, revoked(), change, "A@2", T0), T0)
    tomb = on_listing_event(down.state, event("E2", (), ListingEventType.DELISTED), T0)
    replay = on_listing_event(tomb.state, event("E1", (A,)), T0)
    assert [(v.trigger_id, v.action) for v in replay.verdicts] == [
        ("E1", VerdictAction.ALLOW),
        ("A@2", VerdictAction.TAKEDOWN),
    ]
