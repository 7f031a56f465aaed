"""The certificate side of the foreign-key join: per-certificate state and when to fan out.

Pure, like ``listing_side``. A *fan-out* is the re-check of every listing that claims a
certificate; the agent streams it from the claim index. Fan-outs are made crash-safe in two
writes: the state is first written with ``fanout_done=False``, the re-checks are sent and
acknowledged, then ``fanout_done=True`` is written. A replayed trigger that finds its own
fan-out unfinished runs it again (re-checks are idempotent on the listing side); one that finds
it done changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from streams.model import CertificateChange, CertTrigger, CertView, VerdictTrigger
from streams.rules import change_trigger_id, expiry_trigger_id, is_expired


@dataclass(frozen=True, slots=True)
class CertState:
    cert_no: str
    view: CertView
    changed_at: int
    record: dict[str, object]  # the authority's record as received, for "why was it blocked?"
    fanout_trigger_id: str | None = None
    fanout_done: bool = True
    # (expires_on, sweep time) once the expiry sweep has fanned out for that expiry date.
    expiry_swept: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class CertDecision:
    state: CertState | None = None  # None: nothing to write
    fanout: CertTrigger | None = None  # re-check every listing claiming the certificate


def _rules_relevant(view: CertView) -> tuple[object, ...]:
    return (view.status, view.category_code, view.expires_on, view.models)


def on_status_change(state: CertState | None, change: CertificateChange) -> CertDecision:
    """A newer version replaces the state; stale or duplicate versions change nothing."""
    trigger_id = change_trigger_id(change.cert_no, change.view.version)
    if state is not None and change.view.version <= state.view.version:
        if state.fanout_trigger_id == trigger_id and not state.fanout_done:
            return CertDecision(fanout=_change_fanout(change, trigger_id))
        return CertDecision()
    # A certificate seen for the first time may already be claimed (listings blocked as "not
    # found" wait for it), so it always fans out. After that, only what the rules read matters:
    # a new holder name re-checks nobody.
    relevant = state is None or _rules_relevant(state.view) != _rules_relevant(change.view)
    swept = state.expiry_swept if state is not None else None
    if swept is not None and swept[0] != change.view.expires_on:
        swept = None  # a new validity date gets its own sweep
    new_state = CertState(
        cert_no=change.cert_no,
        view=change.view,
        changed_at=change.changed_at,
        record=change.record,
        fanout_trigger_id=trigger_id,
        fanout_done=not relevant,
        expiry_swept=swept,
    )
    return CertDecision(new_state, _change_fanout(change, trigger_id) if relevant else None)


def _change_fanout(change: CertificateChange, trigger_id: str) -> CertTrigger:
    return CertTrigger(
        change.cert_no,
        change.view,
        VerdictTrigger.CERTIFICATE_CHANGE,
        trigger_id,
        change.changed_at,
    )


def is_due_for_expiry(state: CertState, now_ms: int) -> bool:
    """The sweep's test: past its validity and not yet swept for this validity date."""
    swept = state.expiry_swept
    already_swept = swept is not None and swept[0] == state.view.expires_on
    return not already_swept and is_expired(state.view.expires_on, now_ms)


def on_expiry(state: CertState | None, at_ms: int) -> CertDecision:
    """The sweep found the certificate expired at ``at_ms``: re-check its listings once."""
    if state is None or not is_expired(state.view.expires_on, at_ms):
        return CertDecision()  # unknown, or renewed since the sweep looked
    trigger_id = expiry_trigger_id(state.cert_no)
    swept = state.expiry_swept
    if swept is not None and swept[0] == state.view.expires_on:
        if state.fanout_trigger_id == trigger_id and not state.fanout_done:
            return CertDecision(fanout=_expiry_fanout(state, swept[1]))
        return CertDecision()
    new_state = replace(
        state,
        fanout_trigger_id=trigger_id,
        fanout_done=False,
        expiry_swept=(state.view.expires_on, at_ms),
    )
    return CertDecision(new_state, _expiry_fanout(new_state, at_ms))


def _expiry_fanout(state: CertState, at_ms: int) -> CertTrigger:
    return CertTrigger(
        state.cert_no,
        state.view,
        VerdictTrigger.CERTIFICATE_EXPIRY,
        expiry_trigger_id(state.cert_no),
        at_ms,
    )


def late_expiry_recheck(state: CertState | None) -> CertTrigger | None:
    """For a new subscriber: if the sweep already took this certificate's listings down, the
    new claim gets the same expiry re-check, so a listing event that arrives late (its own time
    before the expiry) cannot stay live on an expired certificate."""
    if state is None or state.expiry_swept is None:
        return None
    expires_on, swept_at = state.expiry_swept
    if expires_on != state.view.expires_on:
        return None
    return _expiry_fanout(state, swept_at)


def mark_fanout_done(state: CertState) -> CertState:
    return replace(state, fanout_done=True)
