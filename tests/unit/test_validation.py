"""From decoded records to trusted ones: what validation refuses, and what it keeps verbatim."""

from __future__ import annotations

from typing import Any

import pytest

from streams.errors import InvalidRecordError
from streams.listing_side import on_certificate_answer, on_listing_event
from streams.model import CertificateStatus, CertView, ListingEventType
from streams.settings import Settings
from streams.state_codec import decode_listing, encode_listing
from streams.validation import Limits, certificate_change, listing_event
from tests.builders import listing_event as listing_record
from tests.builders import status_change

LIMITS = Limits.from_settings(Settings.from_env({}))
CERT = "2017010907948411"


def decoded(**changes: Any) -> dict[str, Any]:
    record = listing_record("L-1", [CERT, CERT, "2O17"])
    record.update(changes)
    return record


def test_valid_event_keeps_claims_verbatim_in_order_without_duplicates() -> None:
    event = listing_event(decoded(), b"L-1", LIMITS)
    assert event.cert_numbers == (CERT, "2O17")
    assert event.event_type is ListingEventType.CREATED


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"listing_id": ""}, b"", "listing_id is empty"),
        ({"event_id": "  "}, b"L-1", "event_id is empty"),
        ({}, b"L-2", "does not equal listing_id"),
        ({}, None, "does not equal listing_id"),
        ({"shop_id": "S\u202e1"}, b"L-1", "control or separator"),
        ({"title": "x" * 5000}, b"L-1", "title has 5000 characters"),
        ({"cert_numbers": [str(n) for n in range(51)]}, b"L-1", "claims 51 certificate numbers"),
        ({"cert_numbers": ["9" * 300]}, b"L-1", "300 characters"),
    ],
)
def test_invalid_listing_events(changes: dict[str, Any], key: bytes | None, message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        listing_event(decoded(**changes), key, LIMITS)


def test_status_change_needs_a_well_formed_number_matching_its_key() -> None:
    change = certificate_change(status_change(CERT, "REVOKED", 4), CERT.encode(), LIMITS)
    assert change.view.status is CertificateStatus.REVOKED and change.view.version == 4
    with pytest.raises(InvalidRecordError, match="does not equal cert_no"):
        certificate_change(status_change(CERT), b"2017010907948412", LIMITS)
    with pytest.raises(InvalidRecordError, match="not a well-formed"):
        certificate_change(status_change("2O17010907948411"), b"2O17010907948411", LIMITS)
    with pytest.raises(InvalidRecordError, match="negative"):
        certificate_change(status_change(CERT, version=-1), CERT.encode(), LIMITS)


def test_listing_state_survives_its_codec() -> None:
    event = listing_event(decoded(), b"L-1", LIMITS)
    outcome = on_listing_event(None, event, 5)
    assert outcome.state is not None and outcome.state.pending
    assert decode_listing(encode_listing(outcome.state)) == outcome.state
    view = CertView(CertificateStatus.VALID, 1, "0907", 30_000)
    decided = on_certificate_answer(outcome.state, "L-1", CERT, view, 6).state
    assert decided is not None and decided.last_verdict is not None
    assert decode_listing(encode_listing(decided)) == decided
