"""The demo's screen: a verdict's line, and the summary of a run."""

from __future__ import annotations

from typing import Any

from streams.demo_report import Tally, dead_letter_kind, format_shop_alert, format_verdict

T = 1_790_000_000_000


def verdict(action: str, reasons: list[str], trigger: str = "LISTING_EVENT") -> dict[str, Any]:
    return {
        "action": action,
        "reasons": reasons,
        "failing_certs": ["2019010907000001"] if reasons else [],
        "platform": "jd",
        "listing_id": "L-000001",
        "trigger": trigger,
        "trigger_id": "E-1",
        "event_time": T,
        "decided_at": T,
    }


def test_a_verdict_line_says_what_why_and_what_triggered_it() -> None:
    line = format_verdict(verdict("BLOCK", ["CERTIFICATE_REVOKED"]))
    assert line.split()[1:4] == ["BLOCK", "jd", "L-000001"]
    assert "CERTIFICATE_REVOKED failing=2019010907000001" in line
    assert line.endswith("[LISTING_EVENT E-1]")
    assert " - " in format_verdict(verdict("ALLOW", []))


def test_the_summary_counts_actions_blocking_reasons_dead_letters_and_latency() -> None:
    tally = Tally(listing_events=5, status_changes=1, initial_certificates=3, undecodable=1)
    for received, v in enumerate(
        [
            verdict("ALLOW", []),
            verdict("BLOCK", ["CERTIFICATE_NOT_FOUND"]),
            verdict("BLOCK", ["CATEGORY_MISMATCH", "CERTIFICATE_NOT_FOUND"]),
            verdict("TAKEDOWN", ["CERTIFICATE_REVOKED"], "CERTIFICATE_CHANGE"),
            verdict("RESTORE", [], "CERTIFICATE_CHANGE"),
            verdict("TAKEDOWN", ["CERTIFICATE_EXPIRED"], "CERTIFICATE_EXPIRY"),
        ]
    ):
        tally.verdict(v, T + 10 * (received + 1))
    tally.dead_letter({"error": "bad_magic: value starts with 6e6f"})
    alert = {
        "kind": "RAISED",
        "platform": "jd",
        "shop_id": "S-7",
        "takedowns": 3,
        "blocks": 0,
        "window_days": 30,
        "distinct_listings": 3,
        "sample_listing_ids": ["L-3", "L-2", "L-1", "L-0"],
    }
    tally.shop_alert(alert)
    assert format_shop_alert(alert) == (
        "--- shop alert: RAISED jd/S-7: 3 takedowns, 0 blocks in 30 days "
        "(3 listings; latest L-3,L-2,L-1)"
    )
    summary = tally.summary(12.3)
    assert "5 listing events, 1 status changes of 3 certificates, 1 undecodable" in summary
    assert "verdicts:     6 (ALLOW 1, BLOCK 2, TAKEDOWN 2, RESTORE 1)" in summary
    assert (
        "blocking:     CERTIFICATE_NOT_FOUND 2, CATEGORY_MISMATCH 1, CERTIFICATE_REVOKED 1, "
        "CERTIFICATE_EXPIRED 1"
    ) in summary
    assert "takedowns:    2, restores: 1" in summary
    assert "dead letters: 1 (bad_magic 1)" in summary
    assert "shop alerts:  1 (RAISED 1)" in summary
    # An expiry's event time is not a send time: 5 verdicts timed, 10 to 50 ms.
    assert "p50 30 ms, p99 50 ms" in summary and "5 verdicts" in summary


def test_an_empty_run_still_summarises() -> None:
    summary = Tally().summary(0.0)
    assert "verdicts:     0 (ALLOW 0, BLOCK 0, TAKEDOWN 0, RESTORE 0)" in summary
    assert "blocking:     none" in summary
    assert "too few verdicts" in summary


def test_a_dead_letters_kind_is_what_its_error_starts_with() -> None:
    assert dead_letter_kind({"error": "malformed_body: truncated at byte 7"}) == "malformed_body"
