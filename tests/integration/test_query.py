"""The query API and CLI against real workers on the real broker: one worker, then two sharing
the partitions, with listings placed by librdkafka's default partitioner (CRC32), which no
worker could find by hashing a listing id."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.builders import cert_no, listing_event, listing_id, status_change
from tests.integration.harness import (
    CODEC,
    FAST_FAILOVER_ENV,
    REPO,
    Deployment,
    Guard,
    Worker,
    publish_confluent,
    running_guard,
    wait_for,
)

TOKEN = "query-token-0123456789abcdef"
Response = tuple[int, dict[str, str], dict[str, Any]]


def get(base: str, path: str, token: str | None = TOKEN, method: str = "GET") -> Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(base + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, dict(error.headers), orjson.loads(body) if body[:1] == b"{" else {}


def _deployment(
    kafka: str, root: Path, partitions: int = 4, env: Mapping[str, str] | None = None
) -> Deployment:
    token_file = root / "query-token"
    token_file.write_text(TOKEN + "\n")
    extra_env = {"CCC_QUERY_TOKEN_FILE": str(token_file), **(env or {})}
    return Deployment(kafka, root, partitions=partitions, extra_env=extra_env)


def _cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=REPO,
        env=deployment.env(0),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _publish_listings_crc32(guard: Guard, events: list[dict[str, Any]]) -> None:
    topic = guard.deployment.catalogue.listing_events.name
    publish_confluent(
        guard.deployment.bootstrap,
        [(topic, e["listing_id"].encode(), CODEC.encode("ListingEvent", e)) for e in events],
    )


@pytest.fixture(scope="module")
def one_worker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    with running_guard(_deployment(kafka, tmp_path_factory.mktemp("query1"))) as guard:
        yield guard


def test_the_api_needs_the_token_and_only_reads(one_worker: Guard) -> None:
    base = one_worker.workers[0].web_url
    assert get(base, "/v1/listings/L-1", token=None)[0] == 401
    status, headers, body = get(base, "/v1/listings/L-1", token="wrong-token-0123456789")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert body == {"error": "unauthorized"} and "X-CCC-Worker" not in headers
    assert get(base, "/v1/listings/L-1", method="POST")[0] == 405
    assert get(base, "/v1/listings/L-1", method="HEAD")[0] == 405


def test_a_listing_answer_explains_its_verdict_and_names_the_worker(one_worker: Guard) -> None:
    good, revoked = cert_no(), cert_no()
    one_worker.feed.certificates(status_change(good), status_change(revoked, "REVOKED"))
    blocked, live = listing_id(), listing_id()
    _publish_listings_crc32(
        one_worker,
        [listing_event(blocked, [good, revoked]), listing_event(live, [good])],
    )
    [verdict] = one_worker.wait_verdicts(blocked)
    one_worker.wait_verdicts(live)
    base = one_worker.workers[0].web_url

    status, headers, doc = get(base, f"/v1/listings/{blocked}")

    assert status == 200
    assert headers["X-CCC-Worker"] == doc["worker"] == doc["owner"]
    assert doc["status"] == "BLOCKED" and doc["reasons"] == verdict["reasons"]
    assert doc["failing_certs"] == [revoked]
    assert [v["verdict_id"] for v in doc["verdicts"]] == [verdict["verdict_id"]]
    by_cert = {c["cert_no"]: c for c in doc["certificates"]}
    assert by_cert[revoked]["status"] == "REVOKED" and by_cert[good]["status"] == "VALID"
    assert get(base, f"/v1/listings/{live}")[2]["status"] == "LIVE"

    status, _, doc = get(base, f"/v1/certificates/{revoked}")
    assert status == 200
    assert (doc["status"], doc["reason"], doc["claimed_by"]) == ("REVOKED", "surveillance", 1)
    assert get(base, f"/v1/certificates/{good}")[2]["claimed_by"] == 2


def test_unknown_ids_are_a_bare_404(one_worker: Guard) -> None:
    base = one_worker.workers[0].web_url
    for path in ("/v1/listings/L-never-seen", "/v1/certificates/2020010907999999"):
        status, _, body = get(base, path)
        assert status == 404 and body == {"error": "not found", "worker": base}


def test_claimers_are_paged_in_listing_id_order(one_worker: Guard) -> None:
    cert = cert_no()
    one_worker.feed.certificates(status_change(cert))
    ids = sorted(listing_id() for _ in range(7))
    _publish_listings_crc32(one_worker, [listing_event(i, [cert]) for i in ids])
    for i in ids:
        one_worker.wait_verdicts(i)
    base = one_worker.workers[0].web_url

    seen, after, pages = [], "", 0
    while after is not None:
        status, _, page = get(base, f"/v1/certificates/{cert}/listings?limit=3&after={after}")
        assert status == 200 and len(page["listings"]) <= 3
        seen += [row["listing_id"] for row in page["listings"]]
        after, pages = page["next_after"], pages + 1
    assert seen == ids and pages == 3
    assert get(base, f"/v1/certificates/{cert}/listings?limit=0")[0] == 400


def test_the_cli_prints_the_answers_and_exits_0_found_1_not(one_worker: Guard) -> None:
    cert = cert_no()
    one_worker.feed.certificates(status_change(cert, "SUSPENDED"))
    listing = listing_id()
    one_worker.feed.listings(listing_event(listing, [cert]))
    one_worker.wait_verdicts(listing)
    url = one_worker.workers[0].web_url
    deployment = one_worker.deployment

    explained = _cli(deployment, "explain", listing, "--url", url)
    assert explained.returncode == 0, explained.stderr
    assert "status    BLOCKED" in explained.stdout and "CERTIFICATE_SUSPENDED" in explained.stdout
    claimers = _cli(deployment, "claimers", cert, "--url", url)
    assert claimers.returncode == 0, claimers.stderr
    assert listing in claimers.stdout and "claimed by  1 listing(s)" in claimers.stdout
    assert _cli(deployment, "explain", "L-never-seen", "--url", url).returncode == 1
    assert _cli(deployment, "claimers", "2020010907999998", "--url", url).returncode == 1


def test_without_a_token_file_there_is_no_api(guard: Guard) -> None:
    assert get(guard.workers[0].web_url, "/v1/listings/L-1")[0] == 404
    assert get(guard.workers[0].web_url, "/readyz", token=None)[0] == 200


# -- two workers -------------------------------------------------------------------------------


def _ready(base: str) -> bool:
    try:
        return get(base, "/readyz", token=None)[0] == 200
    except urllib.error.URLError:
        return False


def _listing_path(lid: str) -> str:
    return f"/v1/listings/{urllib.parse.quote(lid, safe='')}"


def _answers(base: str, listings: list[str]) -> dict[str, Response]:
    return {lid: get(base, _listing_path(lid)) for lid in listings}


def test_two_workers_answer_alike_and_a_rebalance_or_a_dead_owner_is_a_503_not_a_wrong_answer(
    kafka: str, tmp_path: Path
) -> None:
    deployment = _deployment(kafka, tmp_path, partitions=6, env=FAST_FAILOVER_ENV)
    with running_guard(deployment) as guard:
        cert = cert_no()
        guard.feed.certificates(status_change(cert, "REVOKED"))
        # One id with a "/" in it: it must stay one path segment when asked of another worker.
        listings = sorted([*(listing_id() for _ in range(23)), f"JD/{listing_id()}"])
        _publish_listings_crc32(guard, [listing_event(i, [cert]) for i in listings])
        for i in listings:
            guard.wait_verdicts(i)
        first = guard.workers[0].web_url

        # A second worker joins; ask the first about every listing, over and over, meanwhile.
        second = Worker(deployment, 1).launch()
        guard.workers.append(second)
        unavailable = wrong = 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for lid in listings:
                status, headers, doc = get(first, _listing_path(lid))
                if status == 503:
                    assert int(headers["Retry-After"]) > 0
                    unavailable += 1
                elif status != 200 or doc["status"] != "BLOCKED":
                    wrong += 1
            if _ready(second.web_url) and unavailable:
                settled = _answers(first, listings).values()
                owners = {doc.get("owner") for status, _, doc in settled if status == 200}
                if len(owners) == 2 and all(status == 200 for status, _, _ in settled):
                    break
        assert wrong == 0
        assert unavailable > 0, "no query fell inside the rebalance"

        # Settled: either worker answers for every listing, from whichever holds it.
        wait_for(
            lambda: all(r[0] == 200 for r in _answers(second.web_url, listings).values()),
            60,
            "the second worker answering",
        )
        from_first = _answers(first, listings)
        from_second = _answers(second.web_url, listings)
        assert {doc["owner"] for _, _, doc in from_first.values()} == {first, second.web_url}
        for lid in listings:
            a, b = from_first[lid][2], from_second[lid][2]
            assert (a["worker"], b["worker"]) == (first, second.web_url)
            assert {**a, "worker": ""} == {**b, "worker": ""}

        pages = [
            get(base, f"/v1/certificates/{cert}/listings?limit=1000")[2]
            for base in (first, second.web_url)
        ]
        assert [r["listing_id"] for r in pages[0]["listings"]] == listings
        assert pages[0]["listings"] == pages[1]["listings"]
        paged, after = [], ""
        while after is not None:
            query = urllib.parse.urlencode({"after": after, "limit": 5})
            page = get(second.web_url, f"/v1/certificates/{cert}/listings?{query}")[2]
            paged += [r["listing_id"] for r in page["listings"]]
            after = page["next_after"]
        assert paged == listings  # merged across both workers' partitions, page by page
        assert get(second.web_url, f"/v1/certificates/{cert}")[2]["claimed_by"] == len(listings)

        # The second worker dies: what it held is a 503 until the group gives it to the first.
        held_by_second = next(lid for lid, r in from_first.items() if r[2]["owner"] != first)
        second.kill()
        status, headers, _ = get(first, _listing_path(held_by_second))
        assert status == 503 and int(headers["Retry-After"]) > 0

        def taken_over() -> bool:
            status = get(first, _listing_path(held_by_second))[0]
            assert status in (200, 503), f"{status} while the dead worker's partitions move"
            return status == 200

        wait_for(
            taken_over,
            90,
            "the first worker taking the dead worker's partitions over",
        )
        status, _, doc = get(first, _listing_path(held_by_second))
        assert doc["owner"] == first and doc["status"] == "BLOCKED"
