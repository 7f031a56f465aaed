"""End to end on the real broker: listing events in, verdicts out; certificate changes re-check
the listings that claim them."""

from __future__ import annotations

import json

import pytest

from streams.clock import DAY_MS
from tests.builders import cert_no, listing_event, listing_id, now_ms, status_change, today_cst
from tests.integration.harness import MODEL_BLOCK_PLATFORM, REPO, Guard
from topics.codecs import AvroCodec


def actions(verdicts: list[dict[str, object]]) -> list[object]:
    return [v["action"] for v in verdicts]


def test_valid_certificate_is_allowed(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    guard.feed.certificates(status_change(cert))
    event = listing_event(listing, [cert], platform="tmall", shop="S-9")
    guard.feed.listings(event)
    [verdict] = guard.wait_verdicts(listing)
    assert verdict["action"] == "ALLOW"
    assert verdict["reasons"] == [] and verdict["failing_certs"] == []
    assert verdict["cert_numbers"] == [cert]
    assert (verdict["platform"], verdict["shop_id"]) == ("tmall", "S-9")
    assert verdict["trigger"] == "LISTING_EVENT" and verdict["trigger_id"] == event["event_id"]
    assert verdict["event_time"] == event["occurred_at"]
    assert verdict["_key"] == listing.encode()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("none", "NO_CERTIFICATE"),
        ("malformed", "INVALID_CERTIFICATE_NUMBER"),
        ("unknown", "CERTIFICATE_NOT_FOUND"),
        ("SUSPENDED", "CERTIFICATE_SUSPENDED"),
        ("REVOKED", "CERTIFICATE_REVOKED"),
        ("CANCELLED", "CERTIFICATE_CANCELLED"),
        ("EXPIRED", "CERTIFICATE_EXPIRED"),
        ("past_date", "CERTIFICATE_EXPIRED"),
        ("category", "CATEGORY_MISMATCH"),
    ],
)
def test_each_reason_blocks(guard: Guard, case: str, reason: str) -> None:
    cert, listing = cert_no(), listing_id()
    certs, category = [cert], "0907"
    if case == "none":
        certs = []
    elif case == "malformed":
        certs = [cert.replace("0", "O", 1)]
    elif case == "past_date":
        guard.feed.certificates(status_change(cert, expires_on=today_cst() - 1))
    elif case == "category":
        guard.feed.certificates(status_change(cert))
        category = "0713"
    elif case != "unknown":
        guard.feed.certificates(status_change(cert, case))
    guard.feed.listings(listing_event(listing, certs, category=category))
    [verdict] = guard.wait_verdicts(listing)
    assert verdict["action"] == "BLOCK"
    assert verdict["reasons"] == [reason]
    assert verdict["failing_certs"] == certs


def test_verdicts_carry_their_evidence_and_a_v1_consumer_reads_them(guard: Guard) -> None:
    cert, unknown = cert_no(), cert_no()
    warned, blocked = listing_id(), listing_id()
    guard.feed.certificates(status_change(cert, version=3, models=("KX-100、KX-200",)))
    guard.feed.listings(
        listing_event(warned, [cert], platform="jd", model="KX-900"),
        listing_event(blocked, [cert, unknown], platform=MODEL_BLOCK_PLATFORM, model="KX-900"),
    )
    [allowed] = guard.wait_verdicts(warned)
    assert (allowed["action"], allowed["reasons"], allowed["warnings"]) == (
        "ALLOW",
        [],
        ["MODEL_MISMATCH"],
    )
    assert allowed["rules_version"].endswith(";model=WARN")
    [evidence] = allowed["evidence"]
    assert evidence == {
        "cert_no": cert,
        "known": True,
        "status": "VALID",
        "version": 3,
        "valid_until": today_cst() + 1000,
        "category_code": "0907",
        "models_matched": [],
        "reasons": [],
        "warnings": ["MODEL_MISMATCH"],
    }

    [block] = guard.wait_verdicts(blocked)
    assert block["action"] == "BLOCK" and block["rules_version"].endswith(";model=BLOCK")
    assert block["reasons"] == ["CERTIFICATE_NOT_FOUND"]  # what v1 can name
    assert block["reason_codes"] == ["CERTIFICATE_NOT_FOUND", "MODEL_MISMATCH"]
    assert [(e["cert_no"], e["known"], e["reasons"]) for e in block["evidence"]] == [
        (cert, True, ["MODEL_MISMATCH"]),
        (unknown, False, ["CERTIFICATE_NOT_FOUND"]),
    ]

    # A takedown consumer built against v1 reads the same bytes off the topic.
    v1_reader = AvroCodec(read_as={"ListingVerdict": 1})
    for verdict in (allowed, block):
        as_v1 = v1_reader.decode("ListingVerdict", verdict["_value"])
        assert set(as_v1) == set(FIELD_ORDER_V1)
        assert as_v1 == {name: verdict[name] for name in FIELD_ORDER_V1}


# The v1 contract's fields, as its schema file names them.
FIELD_ORDER_V1 = tuple(
    field["name"]
    for field in json.loads((REPO / "avro" / "ListingVerdict.v1.avsc").read_text())["fields"]
)


def test_one_bad_certificate_blocks_and_restoring_it_restores(guard: Guard) -> None:
    good, bad, listing = cert_no(), cert_no(), listing_id()
    guard.feed.certificates(status_change(good), status_change(bad, "SUSPENDED"))
    guard.feed.listings(listing_event(listing, [good, bad]))
    [blocked] = guard.wait_verdicts(listing)
    assert (blocked["action"], blocked["failing_certs"]) == ("BLOCK", [bad])
    guard.feed.certificates(status_change(bad, "VALID", 2))
    restored = guard.wait_verdicts(listing, 2)[1]
    assert restored["action"] == "RESTORE"
    assert restored["trigger"] == "CERTIFICATE_CHANGE" and restored["trigger_id"] == f"{bad}@2"
    assert restored["reasons"] == []


def test_revocation_takes_down_every_live_claimant_once(guard: Guard) -> None:
    cert, other_bad = cert_no(), cert_no()
    guard.feed.certificates(status_change(cert), status_change(other_bad, "REVOKED"))
    live = [listing_id() for _ in range(300)]
    blocked, delisted = listing_id(), listing_id()
    guard.feed.listings(
        *[listing_event(lid, [cert]) for lid in live],
        listing_event(blocked, [cert, other_bad]),
        listing_event(delisted, [cert]),
    )
    for lid in [*live, blocked, delisted]:
        guard.wait_verdicts(lid)
    guard.feed.listings(listing_event(delisted, [], "DELISTED"))
    guard.feed.certificates(status_change(cert, "REVOKED", 2))
    claimants = set(live)
    takedowns = guard.verdicts.wait_for(
        lambda v: v["trigger_id"] == f"{cert}@2", count=len(live), timeout=60
    )
    assert sorted(v["listing_id"] for v in takedowns) == sorted(claimants)
    assert {v["action"] for v in takedowns} == {"TAKEDOWN"}
    assert all(v["reasons"] == ["CERTIFICATE_REVOKED"] for v in takedowns)
    # A later sentinel on the same certificate proves the fan-out was complete: nothing else came.
    guard.feed.certificates(status_change(cert, "VALID", 3))
    guard.verdicts.wait_for(lambda v: v["trigger_id"] == f"{cert}@3", count=len(live), timeout=60)
    assert len(guard.verdicts.snapshot(lambda v: v["trigger_id"] == f"{cert}@2")) == len(live)
    assert actions(guard.verdicts_of(blocked)) == ["BLOCK"]
    assert actions(guard.verdicts_of(delisted)) == ["ALLOW"]


def test_suspension_then_reinstatement(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    guard.feed.certificates(status_change(cert))
    guard.feed.listings(listing_event(listing, [cert]))
    guard.wait_verdicts(listing)
    guard.feed.certificates(status_change(cert, "SUSPENDED", 2))
    guard.wait_verdicts(listing, 2)
    guard.feed.certificates(status_change(cert, "VALID", 3))
    verdicts = guard.wait_verdicts(listing, 3)
    assert actions(verdicts) == ["ALLOW", "TAKEDOWN", "RESTORE"]
    assert verdicts[1]["reasons"] == ["CERTIFICATE_SUSPENDED"]


def test_unknown_certificate_then_valid_arrival(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    guard.feed.listings(listing_event(listing, [cert]))
    [blocked] = guard.wait_verdicts(listing)
    assert blocked["reasons"] == ["CERTIFICATE_NOT_FOUND"]
    guard.feed.certificates(status_change(cert, version=5))
    verdicts = guard.wait_verdicts(listing, 2)
    assert actions(verdicts) == ["BLOCK", "RESTORE"]
    assert verdicts[1]["trigger_id"] == f"{cert}@5"


def test_stale_and_duplicate_versions_change_nothing(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    guard.feed.certificates(status_change(cert, version=3))
    guard.feed.listings(listing_event(listing, [cert]))
    guard.wait_verdicts(listing)
    guard.feed.certificates(
        status_change(cert, "REVOKED", 2),  # stale
        status_change(cert, "VALID", 3),  # duplicate
        status_change(cert, "SUSPENDED", 3),  # same version, other content: still a duplicate
        status_change(cert, "SUSPENDED", 4),  # the sentinel: the first real change
    )
    verdicts = guard.wait_verdicts(listing, 2)
    assert [(v["action"], v["trigger_id"]) for v in verdicts][1:] == [("TAKEDOWN", f"{cert}@4")]


def test_update_that_swaps_certificates_moves_the_claim(guard: Guard) -> None:
    old, new, listing = cert_no(), cert_no(), listing_id()
    guard.feed.certificates(status_change(old), status_change(new))
    guard.feed.listings(listing_event(listing, [old]))
    guard.wait_verdicts(listing)
    guard.feed.listings(listing_event(listing, [new], "UPDATED"))
    assert actions(guard.wait_verdicts(listing, 2)) == ["ALLOW", "ALLOW"]
    guard.feed.certificates(status_change(old, "REVOKED", 2))  # no longer claimed
    guard.feed.certificates(status_change(new, "REVOKED", 2))
    verdicts = guard.wait_verdicts(listing, 3)
    assert [(v["action"], v["trigger_id"]) for v in verdicts][2:] == [("TAKEDOWN", f"{new}@2")]


def test_delisted_listing_is_never_rechecked(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    guard.feed.certificates(status_change(cert))
    guard.feed.listings(listing_event(listing, [cert]))
    guard.wait_verdicts(listing)
    guard.feed.listings(listing_event(listing, [cert], "DELISTED"))
    sentinel = listing_id()
    guard.feed.listings(listing_event(sentinel, [cert]))
    guard.wait_verdicts(sentinel)
    guard.feed.certificates(status_change(cert, "REVOKED", 2))
    guard.verdicts.wait_for(
        lambda v: v["trigger_id"] == f"{cert}@2" and v["listing_id"] == sentinel
    )
    assert actions(guard.verdicts_of(listing)) == ["ALLOW"]


def test_expiry_sweep_takes_down_listings_of_expired_certificates(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    expires_on = today_cst() - 2
    guard.feed.certificates(
        status_change(cert, expires_on=expires_on, changed_at=now_ms() - 9 * DAY_MS)
    )
    # The listing's own time is before the expiry, so its event is allowed; the sweep (every
    # second in tests) then finds the certificate expired and takes the listing down.
    event = listing_event(listing, [cert], occurred_at=(expires_on - 1) * DAY_MS)
    guard.feed.listings(event)
    verdicts = guard.wait_verdicts(listing, 2)
    assert actions(verdicts) == ["ALLOW", "TAKEDOWN"]
    takedown = verdicts[1]
    assert takedown["trigger"] == "CERTIFICATE_EXPIRY"
    assert takedown["trigger_id"] == f"{cert}@expiry"
    assert takedown["reasons"] == ["CERTIFICATE_EXPIRED"]


def test_listing_event_replayed_gets_the_same_verdict_id(guard: Guard) -> None:
    cert, listing = cert_no(), listing_id()
    guard.feed.certificates(status_change(cert))
    event = listing_event(listing, [cert])
    guard.feed.listings(event)
    guard.wait_verdicts(listing)
    guard.feed.listings(event)  # as after a crash before the offset was committed
    first, second = guard.wait_verdicts(listing, 2)
    assert first["verdict_id"] == second["verdict_id"]
    assert first["action"] == second["action"] == "ALLOW"
