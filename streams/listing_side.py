"""The listing side of the foreign-key join: per-listing state and the decisions it makes.

Pure: every function takes the current state and one input, mutates nothing it does not return,
and says what to send (verdicts, subscriptions) in an ``Outcome``. The Faust agent only moves
bytes in and out.

How a listing learns about its certificates (Kafka Streams' KIP-213 shape): for each newly
claimed well-formed certificate it *subscribes* (a message to the certificate side, keyed by
cert_no); the certificate side indexes the claim and *answers* with the certificate's current
view; from then on it sends a *re-check* with the fresh view on every change. So the listing
always holds a view of each certificate it claims and can decide alone.

Each CREATED/UPDATED event becomes a pending check that is decided, in arrival order, as soon as
the views it needs have all been answered: exactly one ALLOW/BLOCK per event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from streams.model import (
    CertTrigger,
    CertView,
    ListingEvent,
    ListingEventType,
    Verdict,
    VerdictAction,
    VerdictReason,
    VerdictTrigger,
)
from streams.rules import (
    DEFAULT_RULES,
    Evaluation,
    Rules,
    evaluate,
    is_well_formed_cert_no,
    listing_event_action,
    recheck_action,
    verdict_id,
)


@dataclass(slots=True)
class PendingCheck:
    """A CREATED/UPDATED event waiting for certificate answers."""

    event_id: str
    occurred_at: int
    claimed: tuple[str, ...]
    category: str | None
    late: bool = False  # read after a newer event of the listing: decided, changes nothing
    model: str | None = None


@dataclass(slots=True)
class DecidedEvent:
    """What a listing event's verdict said, kept for a replay of the event to say it again."""

    digest: str  # event_digest of the event
    action: VerdictAction
    evaluation: Evaluation  # what it was decided on: said again as it was, evidence and all
    claimed: tuple[str, ...]
    occurred_at: int
    decided_at: int
    # The event's id, which its verdict's id derives from: a replayed answer that decided the
    # event says its verdict again without the event at hand. "" in states of before it.
    event_id: str = ""


@dataclass(slots=True)
class ListingState:
    platform: str
    shop_id: str
    category: str | None
    claimed: tuple[str, ...]  # the current claim, as listed, malformed numbers included
    # One entry per well-formed certificate the current claim or a pending check needs:
    # a view, or None when the certificate side answered "not found". A needed certificate
    # without an entry is still awaiting its answer.
    views: dict[str, CertView | None] = field(default_factory=dict)
    live: bool = False
    reasons: tuple[VerdictReason, ...] = ()
    failing: tuple[str, ...] = ()
    pending: list[PendingCheck] = field(default_factory=list)
    # The last verdict emitted and the key of its trigger; a replayed trigger re-emits it
    # unchanged (same verdict_id), which covers a crash between writing this state and the
    # verdict reaching the broker.
    last_verdict: Verdict | None = None
    last_key: str | None = None
    delisted: bool = False  # then only a tombstone stays, once pending checks are decided
    # Digests of the listing's latest events, newest last. After a crash the events since the
    # last commit are read again over state already written: an event found here is a replay
    # and is never applied twice (re-applying an older one would undo the newer ones).
    recent_events: tuple[str, ...] = ()
    # The time of the latest decision. Decisions never go back in time: an event or re-check
    # stamped earlier than a decision already made is decided at this time instead, so a late
    # event cannot re-allow what an expiry already took down.
    clock_ms: int = 0
    # Certificates whose answer is awaited, with the token of the subscription that asked.
    awaiting: dict[str, str] = field(default_factory=dict)
    # Partition offset and event time of the newest listing event applied: an event read
    # after it with an older offset and time was delivered out of order (see _late_event).
    event_offset: int = -1
    event_at: int = 0
    # The verdicts of the latest decided events, newest last. The state is written before the
    # verdicts are sent, so after a crash it can hold decisions whose verdicts never reached
    # the broker; the events are read again, and each one's verdict is said again from here.
    decided: list[DecidedEvent] = field(default_factory=list)
    # The partition its events arrive on, as the platform's producer chose it: where the
    # certificate side sends its answers and re-checks (-1 until an event says).
    partition: int = -1
    model: str | None = None  # the listing's model, as declared


@dataclass(slots=True)
class Outcome:
    state: ListingState | None
    verdicts: list[Verdict] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # subscription token per subscribe
    unsubscribe: list[str] = field(default_factory=list)
    changed: bool = True  # False: nothing to write back
    # The subscriptions are asked again (a replayed event, a re-ask), not new claims: even a
    # certificate already subscribed to is asked for once more.
    asks_again: bool = False


RECENT_EVENTS = 16
# Verdicts kept for replays: the events of one listing between two offset commits (every few
# seconds) that a crash can leave unsent. Each costs ~100 bytes and its event id in every
# changelog write.
RECENT_VERDICTS = 8


def event_digest(event_id: str) -> str:
    """Short and stable across processes (unlike ``hash``): 8 hex characters per event."""
    return hashlib.blake2b(event_id.encode(), digest_size=4).hexdigest()


def trigger_key(trigger: VerdictTrigger, trigger_id: str, view: CertView | None) -> str:
    """What a verdict's id is derived from. The contract's expiry trigger id, ``<cert>@expiry``,
    is the same for every expiry of a certificate; a renewed certificate that expires again
    must not produce the verdict id of its first expiry (consumers would drop it as a
    duplicate), so expiry keys carry the validity date."""
    if trigger is VerdictTrigger.CERTIFICATE_EXPIRY and view is not None:
        return f"{trigger_id}#{view.expires_on}"
    return trigger_id


def _subscribed(claimed: tuple[str, ...]) -> list[str]:
    return [cert_no for cert_no in claimed if is_well_formed_cert_no(cert_no)]


def needed(state: ListingState | None) -> set[str]:
    """The certificates a listing needs views of: its current claim's and its pending
    checks' well-formed numbers."""
    if state is None:
        return set()
    certs = set(_subscribed(state.claimed))
    for check in state.pending:
        certs.update(_subscribed(check.claimed))
    return certs


def _unchanged(state: ListingState | None, verdicts: list[Verdict] | None = None) -> Outcome:
    return Outcome(state, verdicts or [], changed=False)


def _replay_of_last(state: ListingState, key: str) -> Outcome | None:
    if state.last_verdict is not None and state.last_key == key:
        return _unchanged(state, [state.last_verdict])
    return None


def _replayed_event(state: ListingState, event: ListingEvent) -> Outcome:
    """An event this listing has already applied, read again after a crash: never applied
    twice (that would undo newer events).

    Its verdict is said again, same verdict_id: the state may have reached disk while the
    verdict died in the producer's buffer. If its check is still pending, the subscriptions it
    awaits are sent again, for the same reason."""
    digest = event_digest(event.event_id)
    decided = next((d for d in reversed(state.decided) if d.digest == digest), None)
    if decided is not None:
        verdict = _said_again(state, event.listing_id, event.event_id, decided)
        latest = state.last_verdict
        # An older decision said again is followed by the latest one again, so the listing's
        # last verdict on the topic is always its current decision.
        if latest is None or latest.verdict_id == verdict.verdict_id:
            return _unchanged(state, [verdict])
        return _unchanged(state, [verdict, latest])
    check = next((c for c in state.pending if c.event_id == event.event_id), None)
    if check is None:
        return _unchanged(state)  # decided so long ago that its verdict went out long ago
    return _ask_again(state, [c for c in _subscribed(check.claimed) if c in state.awaiting])


def _said_again(
    state: ListingState, listing_id: str, event_id: str, decided: DecidedEvent
) -> Verdict:
    return _verdict(
        state,
        listing_id,
        decided.claimed,
        decided.evaluation,
        decided.action,
        _Cause.listing_event(event_id, decided.occurred_at),
        decided.decided_at,
    )


def _said_again_for(state: ListingState, listing_id: str, cert_no: str) -> list[Verdict]:
    """The verdicts of the kept decided events that claimed ``cert_no``, said again, then the
    listing's current decision: an answer read again after a crash may have decided several
    checks at once, and their verdicts may all have died with it (their events, handled before
    the answer came, are committed and not read again)."""
    verdicts = [
        _said_again(state, listing_id, d.event_id, d)
        for d in state.decided
        if d.event_id and cert_no in d.claimed
    ]
    last = state.last_verdict
    if verdicts and last is not None and verdicts[-1].verdict_id != last.verdict_id:
        verdicts.append(last)
    return verdicts


def reask(state: ListingState) -> Outcome:
    """Ask again for every answer the listing still awaits.

    The safety net under at-least-once delivery: however a subscription or its answer was lost
    (a crash between a state write and a send, a partition moving mid-flight), asking again
    with the same token gets an answer the listing accepts. Re-asking is harmless: the claim
    index entry is written again, and a second answer to one subscription is stale."""
    return _ask_again(state, sorted(state.awaiting))


def _ask_again(state: ListingState, awaited: list[str]) -> Outcome:
    """Subscribe again to ``awaited`` with their tokens. A certificate no longer claimed is
    subscribed and unsubscribed again (same partition, in order), so the check gets its answer
    and the claim index stays right."""
    claimed_now = set(_subscribed(state.claimed))
    return Outcome(
        state,
        subscribe=awaited,
        tokens={c: state.awaiting[c] for c in awaited},
        unsubscribe=[c for c in awaited if c not in claimed_now],
        changed=False,
        asks_again=True,
    )


def on_listing_event(
    state: ListingState | None,
    event: ListingEvent,
    now_ms: int,
    offset: int | None = None,
    partition: int | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Outcome:
    """``offset``: the event's offset in its partition, when known (it tells late events);
    ``partition``: the partition it arrived on, where answers for the listing must go."""
    if state is not None and event_digest(event.event_id) in state.recent_events:
        return _replayed_event(state, event)
    if (
        state is not None
        and offset is not None
        and offset < state.event_offset
        and event.occurred_at <= state.event_at
    ):
        return _late_event(state, event, now_ms, rules)
    delisted = event.event_type is ListingEventType.DELISTED
    if state is None:
        # Even a delisting of an unknown listing is remembered (as a tombstone): read again
        # after a crash, behind the listing's next CREATED, it must not delist that.
        state = ListingState(event.platform, event.shop_id, event.category_code, claimed=())

    old_subscribed = _subscribed(state.claimed)
    new_claim = () if delisted else event.cert_numbers
    new_subscribed = _subscribed(new_claim)
    subscribe = [c for c in new_subscribed if c not in old_subscribed]
    unsubscribe = [c for c in old_subscribed if c not in new_subscribed]

    state.platform, state.shop_id = event.platform, event.shop_id
    state.category, state.model = event.category_code, event.model
    state.claimed = new_claim
    state.delisted = delisted
    state.recent_events = (*state.recent_events, event_digest(event.event_id))[-RECENT_EVENTS:]
    if offset is not None:
        state.event_offset, state.event_at = offset, event.occurred_at
    if partition is not None:
        state.partition = partition
    token = event_digest(event.event_id)
    for cert_no in subscribe:
        # A fresh subscription gets a fresh answer: a view kept for an older pending check
        # stopped receiving re-checks when it was unsubscribed.
        state.views.pop(cert_no, None)
        state.awaiting[cert_no] = token
    if not delisted:
        state.pending.append(
            PendingCheck(
                event.event_id,
                event.occurred_at,
                event.cert_numbers,
                event.category_code,
                model=event.model,
            )
        )
    verdicts = _decide_ready_checks(state, event.listing_id, now_ms, rules)
    tokens = dict.fromkeys(subscribe, token)
    return Outcome(_settle(state), verdicts, subscribe, tokens, unsubscribe)


def _late_event(state: ListingState, event: ListingEvent, now_ms: int, rules: Rules) -> Outcome:
    """An event read after a newer event of the same listing was applied, never applied itself:
    Faust can hand an event it dropped during a rebalance to the stream only after the newer
    ones. Its content is older than the state, so it changes no claim; it still gets its
    verdict, decided on its own claim, followed by the current decision's again (see
    ``_decide_ready_checks``). A late delisting changes nothing and has no verdict."""
    digest = event_digest(event.event_id)
    state.recent_events = (*state.recent_events, digest)[-RECENT_EVENTS:]
    if event.event_type is ListingEventType.DELISTED:
        return Outcome(state)
    held = needed(state)
    ask = [c for c in _subscribed(event.cert_numbers) if c not in held]
    for cert_no in ask:
        state.views.pop(cert_no, None)
        state.awaiting[cert_no] = digest
    state.pending.append(
        PendingCheck(
            event.event_id,
            event.occurred_at,
            event.cert_numbers,
            event.category_code,
            late=True,
            model=event.model,
        )
    )
    verdicts = _decide_ready_checks(state, event.listing_id, now_ms, rules)
    claimed_now = set(_subscribed(state.claimed))
    return Outcome(
        _settle(state),
        verdicts,
        subscribe=ask,
        tokens=dict.fromkeys(ask, digest),
        unsubscribe=[c for c in ask if c not in claimed_now],
    )


def on_certificate_answer(
    state: ListingState | None,
    listing_id: str,
    cert_no: str,
    view: CertView | None,
    now_ms: int,
    token: str | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Outcome:
    """The certificate side answered a subscription: fill the view, decide what is ready.

    Only the answer to the subscription awaited counts (``token`` matches; None matches any,
    for callers that do not track tokens). Any other is an older answer read again after a
    crash: if it repeats what the listing holds, the verdicts it may have decided are said
    again (they may have died with the crash), then the current decision; otherwise it is
    stale."""
    if state is None or cert_no not in needed(state):
        return _unchanged(state)
    expected = state.awaiting.get(cert_no)
    if expected is None or (token is not None and token != expected):
        if cert_no in state.views and state.views[cert_no] == view:
            said = _said_again_for(state, listing_id, cert_no)
            if said:
                return _unchanged(state, said)
            if state.last_verdict is not None:
                return _unchanged(state, [state.last_verdict])
        return _unchanged(state)
    del state.awaiting[cert_no]
    state.views[cert_no] = view
    verdicts = _decide_ready_checks(state, listing_id, now_ms, rules)
    return Outcome(_settle(state), verdicts)


def on_recheck(
    state: ListingState | None,
    listing_id: str,
    cause: CertTrigger,
    now_ms: int,
    rules: Rules = DEFAULT_RULES,
) -> Outcome:
    """A claimed certificate changed (or expired): re-decide at the trigger's time.

    LIVE and now failing ⇒ TAKEDOWN; BLOCKED and now passing ⇒ RESTORE; otherwise only the
    stored reasons change. While an event's check is pending, that check will speak instead.
    """
    if state is None:
        return _unchanged(state)
    cert_no, view, trigger, at_ms = cause.cert_no, cause.view, cause.trigger, cause.at_ms
    key = trigger_key(trigger, cause.trigger_id, view)
    replay = _replay_of_last(state, key)
    if replay is not None:
        return replay
    if cert_no not in _subscribed(state.claimed) or not _accept_view(state, cert_no, view):
        # Claimed no longer (the unsubscribe is on its way), or older than what we hold.
        return _unchanged(state)
    if trigger is VerdictTrigger.CERTIFICATE_CHANGE and state.views.get(cert_no) == view:
        # A change this listing already knows (its answer carried it), read again after a
        # crash: it brings nothing, and must not move the decision clock to its older time.
        return _unchanged(state)
    state.views[cert_no] = view
    if any(not check.late for check in state.pending):
        return Outcome(state, _decide_ready_checks(state, listing_id, now_ms, rules))
    # Nothing pending, or only late checks: they change nothing, so the re-check decides.
    state.clock_ms = max(state.clock_ms, at_ms)
    evaluation = evaluate(
        state.claimed,
        state.category,
        state.views,
        state.clock_ms,
        state.model,
        rules.model_policy(state.platform),
    )
    action = recheck_action(state.live, evaluation)
    state.reasons, state.failing = evaluation.reasons, evaluation.failing_certs
    if action is None:
        return Outcome(state)
    state.live = evaluation.passes
    why = _Cause(trigger, cause.trigger_id, key, at_ms)
    verdict = _verdict(state, listing_id, state.claimed, evaluation, action, why, now_ms)
    state.last_verdict, state.last_key = verdict, key
    return Outcome(state, [verdict])


def _accept_view(state: ListingState, cert_no: str, view: CertView | None) -> bool:
    """Versions only move forward; a certificate once known does not become unknown."""
    held = state.views.get(cert_no)
    if held is None:
        return True
    return view is not None and view.version >= held.version


def _decide_ready_checks(
    state: ListingState, listing_id: str, now_ms: int, rules: Rules
) -> list[Verdict]:
    verdicts: list[Verdict] = []
    while state.pending:
        check = state.pending[0]
        if any(c in state.awaiting or c not in state.views for c in _subscribed(check.claimed)):
            break  # decided in order: a later event never overtakes an earlier one
        state.pending.pop(0)
        state.clock_ms = max(state.clock_ms, check.occurred_at)
        evaluation = evaluate(
            check.claimed,
            check.category,
            state.views,
            state.clock_ms,
            check.model,
            rules.model_policy(state.platform),
        )
        action = listing_event_action(evaluation)
        if not check.late:
            state.live = evaluation.passes
            state.reasons, state.failing = evaluation.reasons, evaluation.failing_certs
        why = _Cause.listing_event(check.event_id, check.occurred_at)
        verdict = _verdict(state, listing_id, check.claimed, evaluation, action, why, now_ms)
        state.decided = [
            *state.decided[-(RECENT_VERDICTS - 1) :],
            DecidedEvent(
                event_digest(check.event_id),
                action,
                evaluation,
                check.claimed,
                check.occurred_at,
                now_ms,
                check.event_id,
            ),
        ]
        verdicts.append(verdict)
        if check.late:
            # The listing's last verdict on the topic stays its current decision.
            if state.last_verdict is not None:
                verdicts.append(state.last_verdict)
        else:
            state.last_verdict, state.last_key = verdict, check.event_id
    return verdicts


def _settle(state: ListingState) -> ListingState:
    """Drop views nobody needs any more. A delisted listing with nothing pending keeps only a
    tombstone: its recent event digests, so that a replay of its older events after a crash
    cannot bring it back (it claims nothing, so nothing re-checks it), and its last verdicts,
    so that such a replay still ends on the listing's last decision."""
    if state.delisted and not state.pending:
        return ListingState(
            state.platform,
            state.shop_id,
            None,
            claimed=(),
            delisted=True,
            last_verdict=state.last_verdict,
            last_key=state.last_key,
            recent_events=state.recent_events,
            clock_ms=state.clock_ms,
            decided=state.decided,
            event_offset=state.event_offset,
            event_at=state.event_at,
            partition=state.partition,
        )
    keep = needed(state)
    for cert_no in [c for c in state.views if c not in keep]:
        del state.views[cert_no]
    for cert_no in [c for c in state.awaiting if c not in keep]:
        del state.awaiting[cert_no]
    return state


@dataclass(frozen=True, slots=True)
class _Cause:
    """What a verdict answers: its trigger, the key its id derives from, its event time."""

    trigger: VerdictTrigger
    trigger_id: str
    key: str
    event_time: int

    @classmethod
    def listing_event(cls, event_id: str, occurred_at: int) -> _Cause:
        return cls(VerdictTrigger.LISTING_EVENT, event_id, event_id, occurred_at)


def _verdict(
    state: ListingState,
    listing_id: str,
    claimed: tuple[str, ...],
    evaluation: Evaluation,
    action: VerdictAction,
    cause: _Cause,
    now_ms: int,
) -> Verdict:
    return Verdict(
        verdict_id=verdict_id(listing_id, cause.key, action),
        listing_id=listing_id,
        platform=state.platform,
        shop_id=state.shop_id,
        action=action,
        reasons=evaluation.reasons,
        cert_numbers=claimed,
        failing_certs=evaluation.failing_certs,
        trigger=cause.trigger,
        trigger_id=cause.trigger_id,
        event_time=cause.event_time,
        decided_at=now_ms,
        warnings=evaluation.warnings,
        evidence=evaluation.evidence,
        rules_version=evaluation.rules_version,
    )
