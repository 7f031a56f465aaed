"""What an SRE sees of a running worker: health endpoints and its own metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from tests.builders import cert_no, listing_event, listing_id, status_change
from tests.integration.harness import Guard, wait_for


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format; 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        series, _, label_text = sample.partition("{")
        if series == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


def test_health_endpoints(guard: Guard) -> None:
    url = guard.workers[0].web_url
    assert get(f"{url}/healthz") == (200, '{"status":"alive"}')
    wait_for(lambda: get(f"{url}/readyz")[0] == 200, 30, "GET /readyz to answer 200")
    assert get(f"{url}/readyz") == (200, '{"status":"ready"}')


def test_metrics_count_what_the_worker_did(guard: Guard) -> None:
    url = f"{guard.workers[0].web_url}/metrics"
    before = get(url)[1]
    cert, listing = cert_no(), listing_id()
    guard.feed.certificates(status_change(cert))
    guard.feed.listings(listing_event(listing, [cert], platform="metrics-test"))
    guard.wait_verdicts(listing)
    guard.feed.certificates(status_change(cert, "REVOKED", 2), status_change(cert, "VALID", 1))
    guard.wait_verdicts(listing, 2)
    guard.feed.raw(guard.deployment.catalogue.listing_events.name, b"x", b"junk")
    guard.deadletters.wait_for(lambda r: r["payload"] == b"junk")
    time.sleep(0.5)
    after = get(url)[1]

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("ccc_guard_verdicts_total", platform="metrics-test", action="ALLOW") == 1
    assert delta("ccc_guard_verdicts_total", platform="metrics-test", action="TAKEDOWN") == 1
    assert (
        delta(
            "ccc_guard_verdict_reasons_total",
            platform="metrics-test",
            action="TAKEDOWN",
            reason="CERTIFICATE_REVOKED",
        )
        == 1
    )
    assert delta("ccc_guard_certificate_changes_total", outcome="stale") >= 1
    assert delta("ccc_guard_recheck_fanout_listings_count", trigger="CERTIFICATE_CHANGE") >= 1
    events_topic = guard.deployment.catalogue.listing_events.name
    assert delta("ccc_guard_dead_letters_total", source_topic=events_topic, kind="bad_magic") == 1
    assert metric(after, "ccc_guard_ready") == 1
    assert "faust_messages_received_total" in after
    assert listing not in after and cert not in after  # no ids in labels


def test_faust_pages_that_would_leak_state_are_off(guard: Guard) -> None:
    url = guard.workers[0].web_url
    for path in ("/table/listings/", "/router/", "/graph/", "/stats/", "/assignment/"):
        status, _ = get(f"{url}{path}")
        assert status == 404, path
