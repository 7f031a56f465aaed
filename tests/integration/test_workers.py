"""Partitions, several workers and restarts: the same verdicts whatever the deployment."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.builders import listing_event, status_change
from tests.integration.harness import Deployment, Guard, Worker, running_guard

T0 = 1_790_000_000_000


def scenario_phases(
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Certificates, listing events, then certificate changes: fixed ids and times, so two
    deployments fed the same scenario must produce the same verdicts."""
    rng = random.Random(seed)
    certs = [f"2019010907{n:06d}" for n in range(40)]
    statuses = ["VALID"] * 30 + ["SUSPENDED", "REVOKED", "CANCELLED", "EXPIRED"] * 2 + ["VALID"] * 2
    changes = [
        status_change(c, s, 1, changed_at=T0, expires_on=30_000)
        for c, s in zip(certs, statuses, strict=True)
    ]
    events = []
    for n in range(400):
        claimed = rng.sample([*certs, "2019010907999999"], rng.choice([0, 1, 1, 1, 2, 3]))
        events.append(listing_event(f"L-{n:04d}", claimed, event_id=f"E-{n}", occurred_at=T0 + n))
    later = [
        status_change(
            c,
            rng.choice(["VALID", "REVOKED", "SUSPENDED"]),
            2,
            changed_at=T0 + 10_000,
            expires_on=30_000,
        )
        for c in certs[::3]
    ]
    return changes, events, later


Outcome = tuple[set[tuple[str, str, str, tuple[str, ...]]], dict[str, bool]]


def run_scenario(guard: Guard, seed: int) -> Outcome:
    """(every listing-event verdict, each listing's final live-or-not).

    Re-check verdicts are compared through the final states only: when two certificates of
    one listing change at once, which re-check speaks first depends on which partition is
    processed first, on one worker as on two."""
    certs, events, later = scenario_phases(seed)
    guard.feed.certificates(*certs)
    guard.feed.listings(*events)
    guard.verdicts.wait_for(
        lambda v: v["trigger"] == "LISTING_EVENT", count=len(events), timeout=120
    )
    guard.feed.certificates(*later)
    # A sentinel after the changes, on a certificate of its own: once its verdict is out, every
    # re-check partitioned alongside it has been decided too - wait a little for the rest.
    sentinel = "2019010907888888"
    guard.feed.certificates(status_change(sentinel, changed_at=T0, expires_on=30_000))
    guard.feed.listings(listing_event("L-sentinel", [sentinel], event_id="E-s", occurred_at=T0))
    guard.wait_verdicts("L-sentinel", timeout=60)
    guard.feed.certificates(
        status_change(sentinel, "REVOKED", 2, changed_at=T0 + 20_000, expires_on=30_000)
    )
    guard.wait_verdicts("L-sentinel", 2, timeout=60)
    verdicts = guard.verdicts.snapshot()
    decisions = {
        (v["verdict_id"], v["listing_id"], v["action"], tuple(v["reasons"]))
        for v in verdicts
        if v["trigger"] == "LISTING_EVENT"
    }
    live = {v["listing_id"]: v["action"] in {"ALLOW", "RESTORE"} for v in verdicts}
    return decisions, live


def test_two_workers_give_the_same_verdicts_as_one(kafka: str, tmp_path: Path) -> None:
    with running_guard(Deployment(kafka, tmp_path / "one")) as one:
        single = run_scenario(one, seed=11)
    with running_guard(Deployment(kafka, tmp_path / "two"), workers=2) as two:
        double = run_scenario(two, seed=11)
    decisions, live = single
    assert len(decisions) == 401  # 400 listings and the sentinel, one verdict each
    assert {"ALLOW", "BLOCK"} == {d[2] for d in decisions}
    assert sum(live.values()) < sum(d[2] == "ALLOW" for d in decisions)  # some were taken down
    assert double == single


@pytest.mark.parametrize("wipe_local_state", [False, True], ids=["local-store", "from-changelog"])
def test_restarted_worker_keeps_its_state(
    kafka: str, tmp_path: Path, wipe_local_state: bool
) -> None:
    deployment = Deployment(kafka, tmp_path)
    cert, other = "2019010907123456", "2019010907654321"
    with running_guard(deployment) as guard:
        guard.feed.certificates(status_change(cert), status_change(other))
        guard.feed.listings(
            listing_event("L-a", [cert]),
            listing_event("L-b", [cert, other]),
            listing_event("L-c", [other]),
        )
        for lid in ("L-a", "L-b", "L-c"):
            guard.wait_verdicts(lid)
        [worker] = guard.workers
        worker.stop()
        if wipe_local_state:
            shutil.rmtree(deployment.root / "worker-0")
        guard.workers = [Worker(deployment).start()]
        # The certificate table survived: a new claim is allowed, not "not found".
        guard.feed.listings(listing_event("L-d", [other]))
        assert guard.wait_verdicts("L-d")[0]["action"] == "ALLOW"
        # The claim index and the listings survived: a revocation reaches every claimant.
        guard.feed.certificates(status_change(cert, "REVOKED", 2))
        guard.verdicts.wait_for(lambda v: v["trigger_id"] == f"{cert}@2", count=2)
        assert sorted(
            v["listing_id"]
            for v in guard.verdicts.snapshot(lambda v: v["trigger_id"] == f"{cert}@2")
        ) == [
            "L-a",
            "L-b",
        ]
        assert [v["action"] for v in guard.verdicts_of("L-c")] == ["ALLOW"]
