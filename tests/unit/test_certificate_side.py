"""The certificate side's decisions: versions, fan-out bookkeeping, the expiry sweep."""

from __future__ import annotations

from dataclasses import replace

from streams.certificate_side import (
    CertState,
    is_due_for_expiry,
    late_expiry_recheck,
    mark_fanout_done,
    on_expiry,
    on_status_change,
)
from streams.model import CertificateChange, CertificateStatus, CertView, VerdictTrigger
from streams.rules import validity_end_ms
from streams.state_codec import decode_certificate, encode_certificate
from streams.topology import scan_certificates

CERT = "2017010907948411"
EXPIRES = 21_000  # 2027-06-30


def change(
    version: int, status: CertificateStatus = CertificateStatus.VALID, **kw: object
) -> CertificateChange:
    view = CertView(
        status, version, str(kw.get("category", "0907")), int(str(kw.get("expires_on", EXPIRES)))
    )
    return CertificateChange(CERT, view, 1_000 * version, {"cert_no": CERT, "version": version})


def applied(state: CertState | None, *changes: CertificateChange) -> CertState:
    for c in changes:
        decision = on_status_change(state, c)
        assert decision.state is not None
        state = mark_fanout_done(decision.state) if decision.fanout else decision.state
    assert state is not None
    return state


def test_first_sighting_fans_out_so_waiting_listings_learn_of_it() -> None:
    decision = on_status_change(None, change(1))
    assert decision.state is not None and not decision.state.fanout_done
    assert decision.fanout is not None
    assert decision.fanout.trigger is VerdictTrigger.CERTIFICATE_CHANGE
    assert decision.fanout.trigger_id == f"{CERT}@1" and decision.fanout.at_ms == 1_000


def test_status_change_fans_out_with_the_new_view() -> None:
    decision = on_status_change(applied(None, change(1)), change(2, CertificateStatus.REVOKED))
    assert decision.fanout is not None
    assert decision.fanout.view.status is CertificateStatus.REVOKED


def test_stale_and_duplicate_versions_change_nothing() -> None:
    state = applied(None, change(1), change(3, CertificateStatus.SUSPENDED))
    assert on_status_change(state, change(2, CertificateStatus.REVOKED)).state is None
    assert on_status_change(state, change(2, CertificateStatus.REVOKED)).fanout is None
    assert on_status_change(state, change(3, CertificateStatus.SUSPENDED)).fanout is None


def test_a_replayed_change_whose_fan_out_never_finished_fans_out_again() -> None:
    interrupted = on_status_change(
        applied(None, change(1)), change(2, CertificateStatus.REVOKED)
    ).state
    assert interrupted is not None
    again = on_status_change(interrupted, change(2, CertificateStatus.REVOKED))
    assert again.state is None  # nothing new to write
    assert again.fanout is not None and again.fanout.trigger_id == f"{CERT}@2"


def test_changes_the_rules_do_not_read_re_check_nobody() -> None:
    decision = on_status_change(applied(None, change(1)), change(2))
    assert decision.state is not None and decision.state.view.version == 2
    assert decision.fanout is None and decision.state.fanout_done


def test_expiry_sweep_finds_each_expiry_once() -> None:
    state = applied(None, change(1))
    end = validity_end_ms(EXPIRES)
    assert not is_due_for_expiry(state, end - 1)
    assert is_due_for_expiry(state, end)
    decision = on_expiry(state, end + 5)
    assert decision.fanout is not None and decision.state is not None
    assert decision.fanout.trigger is VerdictTrigger.CERTIFICATE_EXPIRY
    assert decision.fanout.trigger_id == f"{CERT}@expiry" and decision.fanout.at_ms == end + 5
    swept = mark_fanout_done(decision.state)
    assert not is_due_for_expiry(swept, end + 10_000)
    assert on_expiry(swept, end + 10_000).fanout is None


def test_interrupted_expiry_fan_out_is_resumed_at_the_original_time() -> None:
    end = validity_end_ms(EXPIRES)
    interrupted = on_expiry(applied(None, change(1)), end + 5).state
    assert interrupted is not None
    again = on_expiry(interrupted, end + 60_000)
    assert again.fanout is not None and again.fanout.at_ms == end + 5


def test_expire_command_for_a_renewed_certificate_does_nothing() -> None:
    renewed = applied(None, change(1), change(2, expires_on=EXPIRES + 365))
    assert on_expiry(renewed, validity_end_ms(EXPIRES)).fanout is None


def test_new_validity_date_gets_its_own_sweep() -> None:
    end = validity_end_ms(EXPIRES)
    decision = on_expiry(applied(None, change(1)), end)
    assert decision.state is not None
    swept = mark_fanout_done(decision.state)
    extended = applied(swept, change(2, expires_on=EXPIRES + 10))
    assert extended.expiry_swept is None
    assert is_due_for_expiry(extended, validity_end_ms(EXPIRES + 10))


def test_a_late_subscriber_gets_the_expiry_recheck() -> None:
    state = applied(None, change(1))
    assert late_expiry_recheck(state) is None
    decision = on_expiry(state, validity_end_ms(EXPIRES) + 1)
    assert decision.state is not None
    late = late_expiry_recheck(decision.state)
    assert late is not None and late.trigger is VerdictTrigger.CERTIFICATE_EXPIRY


def test_sweep_with_an_injected_clock_selects_due_certificates_only() -> None:
    due = applied(None, change(1))
    later = replace(
        due, cert_no="2017010907948412", view=replace(due.view, expires_on=EXPIRES + 30)
    )
    items = [(b"a", encode_certificate(due)), (b"b", encode_certificate(later))]
    assert scan_certificates(items, validity_end_ms(EXPIRES) - 1).due == []
    assert scan_certificates(items, validity_end_ms(EXPIRES)).due == [b"a"]
    assert scan_certificates(items, validity_end_ms(EXPIRES + 30)).due == [b"a", b"b"]
    assert scan_certificates(items, 0).statuses == ["VALID", "VALID"]


def test_certificate_state_survives_its_codec() -> None:
    decision = on_expiry(applied(None, change(1)), validity_end_ms(EXPIRES))
    assert decision.state is not None
    assert decode_certificate(encode_certificate(decision.state)) == decision.state
