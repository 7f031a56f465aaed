"""Repeat offenders on the real broker: a shop's listings taken down one by one raise one alert
at the threshold; replays, a worker restart and another shop's verdicts add none."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import query_cli
from tests.builders import cert_no, listing_event, listing_id, status_change
from tests.integration.harness import Deployment, Guard, TopicWatcher, Worker, running_guard

PLATFORM = "jd"
TOKEN = "shop-query-token-0123456789"


@pytest.fixture
def shops(kafka: str, tmp_path: Path) -> Iterator[tuple[Guard, TopicWatcher]]:
    token_file = tmp_path / "query-token"
    token_file.write_text(TOKEN)
    env = {"CCC_SHOP_SWEEP_INTERVAL_SECONDS": "1", "CCC_QUERY_TOKEN_FILE": str(token_file)}
    deployment = Deployment(kafka, tmp_path, extra_env=env)
    with running_guard(deployment) as guard:
        alerts = TopicWatcher(
            kafka, deployment.catalogue.shop_alerts.name, "ShopAlert", deployment.partitions
        )
        try:
            yield guard, alerts
        finally:
            alerts.close()


def live_listings(guard: Guard, shop: str, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``n`` listings of ``shop``, each on its own VALID certificate, allowed."""
    made = [(listing_id(), cert_no()) for _ in range(n)]
    guard.feed.certificates(*(status_change(cert) for _, cert in made))
    events = [
        listing_event(listing, [cert], platform=PLATFORM, shop=shop) for listing, cert in made
    ]
    guard.feed.listings(*events)
    for listing, _ in made:
        assert guard.wait_verdicts(listing)[0]["action"] == "ALLOW"
    return [(listing, cert, event) for (listing, cert), event in zip(made, events, strict=True)]


def take_down(guard: Guard, listing: str, cert: str) -> None:
    guard.feed.certificates(status_change(cert, "REVOKED", version=2))
    guard.wait_verdicts(listing, count=2)


def alerts_of(alerts: TopicWatcher, shop: str) -> list[dict[str, Any]]:
    return alerts.snapshot(lambda r: r["shop_id"] == shop)


def test_a_shop_is_alerted_once_at_its_third_takedown(shops: tuple[Guard, TopicWatcher]) -> None:
    guard, alerts = shops
    offender, bystander = "S-repeat", "S-other"
    listings = live_listings(guard, offender, 5)
    others = live_listings(guard, bystander, 2)

    for listing, cert, _ in listings[:2]:
        take_down(guard, listing, cert)
    # The other shop: two takedowns and a block of its own, none of which is the offender's.
    for listing, cert, _ in others:
        take_down(guard, listing, cert)
    blocked = listing_id()
    guard.feed.listings(listing_event(blocked, [], platform=PLATFORM, shop=bystander))
    assert guard.wait_verdicts(blocked)[0]["action"] == "BLOCK"
    time.sleep(2)  # what the shop side has by now, it has counted
    assert alerts.snapshot() == []

    third, third_cert, _ = listings[2]
    take_down(guard, third, third_cert)
    [alert] = alerts.wait_for(lambda r: r["shop_id"] == offender, timeout=30)
    assert (alert["kind"], alert["platform"], alert["crossing"]) == ("RAISED", PLATFORM, 1)
    assert (alert["takedowns"], alert["blocks"], alert["window_days"]) == (3, 0, 30)
    assert (alert["distinct_listings"], alert["distinct_certificates"]) == (3, 3)
    assert set(alert["sample_listing_ids"]) == {listing for listing, _, _ in listings[:3]}
    assert alert["by_reason"] == [
        {"action": "TAKEDOWN", "reason": "CERTIFICATE_REVOKED", "count": 3}
    ]
    takedown = guard.verdicts_of(third)[-1]
    assert alert["cause"] == takedown["verdict_id"]
    assert alert["_key"] == f"{PLATFORM}\x00{offender}".encode()

    # Replays: the same listing events and the same revocations again.
    guard.feed.listings(*(event for _, _, event in listings[:3]))
    guard.feed.certificates(*(status_change(c, "REVOKED", version=2) for _, c, _ in listings[:3]))
    # A worker restart, then a fourth takedown: still over, so still one alert.
    guard.workers[0].stop()
    guard.workers[0] = Worker(guard.deployment, 0).start()
    fourth, fourth_cert, _ = listings[3]
    take_down(guard, fourth, fourth_cert)
    time.sleep(3)
    assert alerts_of(alerts, offender) == [alert]
    assert alerts_of(alerts, bystander) == []

    # What compliance staff see of both shops.
    fetch = query_cli.http_fetch(guard.workers[0].web_url, TOKEN.encode())
    status, document = fetch(f"/v1/shops/{PLATFORM}/{offender}")
    assert status == 200
    assert (document["takedowns"], document["alerting"]) == (4, True)
    assert document["last_alert"]["alert_id"] == alert["alert_id"]
    status, document = fetch(f"/v1/shops/{PLATFORM}/{bystander}")
    assert (status, document["takedowns"], document["blocks"]) == (200, 2, 1)
    assert not document["alerting"]
    assert fetch(f"/v1/shops/{PLATFORM}/S-never")[0] == 404
