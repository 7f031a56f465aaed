"""Every kind of bad input lands in the dead-letter topic with its reason; the worker goes on."""

from __future__ import annotations

from typing import Any

from tests.builders import cert_no, listing_event, listing_id, status_change
from tests.integration.harness import CODEC, Guard


def _avro(record: dict[str, Any]) -> bytes:
    return CODEC.encode("ListingEvent", record)


def test_bad_records_are_dead_lettered_and_processing_goes_on(guard: Guard) -> None:
    catalogue = guard.deployment.catalogue
    events, status = catalogue.listing_events.name, catalogue.certificate_status.name
    good = _avro(listing_event("L-ok", []))
    wrong_fingerprint = good[:2] + bytes(8) + good[10:]
    verdict_bytes = CODEC.encode(
        "ListingVerdict",
        {
            "verdict_id": "v",
            "listing_id": "L",
            "platform": "p",
            "shop_id": "s",
            "action": "ALLOW",
            "reasons": [],
            "cert_numbers": [],
            "failing_certs": [],
            "trigger": "LISTING_EVENT",
            "trigger_id": "e",
            "event_time": 0,
            "decided_at": 0,
        },
    )
    huge_title = listing_event("L-huge", [cert_no()], title="标" * 170_000)  # ~500 KB of UTF-8
    many_certs = listing_event("L-many", [cert_no() for _ in range(3000)])
    cases: list[tuple[str, str, bytes | None, bytes | None, str]] = [
        ("garbage", events, b"L-1", b"this is not avro", "bad_magic"),
        ("empty value", events, b"L-2", b"", "bad_magic"),
        ("tombstone", events, b"L-3", None, "invalid_record"),
        ("truncated", events, b"L-ok", good[: len(good) // 2], "malformed_body"),
        ("unknown schema", events, b"L-ok", wrong_fingerprint, "unknown_schema"),
        ("another record type", events, b"L", verdict_bytes, "unknown_schema"),
        ("empty listing id", events, b"", _avro(listing_event("", [])), "invalid_record"),
        (
            "control characters",
            events,
            b"L\x07x",
            _avro(listing_event("L\x07x", [])),
            "invalid_record",
        ),
        ("key mismatch", events, b"L-other", _avro(listing_event("L-real", [])), "invalid_record"),
        ("500 KB title", events, b"L-huge", _avro(huge_title), "invalid_record"),
        ("3000 certificates", events, b"L-many", _avro(many_certs), "invalid_record"),
        ("garbage status", status, b"2017010907948411", b"\xc3\x01nope", "unknown_schema"),
        (
            "malformed cert_no in status",
            status,
            b"2O17010907948411",
            CODEC.encode("CertificateStatusChanged", status_change("2O17010907948411")),
            "invalid_record",
        ),
    ]
    for _, topic, key, value, _ in cases:
        guard.feed.raw(topic, key, value)
    # The worker is still deciding: a good listing after all of that gets its verdict.
    after = listing_id()
    guard.feed.listings(listing_event(after, []))
    guard.wait_verdicts(after)

    letters = guard.deadletters.wait_for(lambda r: True, count=len(cases))
    assert len(letters) == len(cases)
    for name, topic, key, value, kind in cases:
        payload = value or b""
        found = [
            r
            for r in letters
            if (r["source_topic"], r["key"]) == (topic, key)
            and (r["payload"] == payload or payload.startswith(r["payload"]))
        ]
        assert len(found) == 1, f"{name}: {len(found)} dead letters"
        letter = found[0]
        assert letter["error"].startswith(f"{kind}:"), f"{name}: {letter['error']}"
        assert letter["offset"] >= 0 and 0 <= letter["partition"] < guard.deployment.partitions
    assert "limit" in next(r for r in letters if r["key"] == b"L-huge")["error"]
    assert "3000" in next(r for r in letters if r["key"] == b"L-many")["error"]
    assert (
        guard.verdicts.snapshot(lambda v: v["listing_id"] in {"L-ok", "L-real", "L-huge", "L-many"})
        == []
    )
    assert all(w.alive for w in guard.workers)
