"""Partitions, several workers and restarts: the same verdicts whatever the deployment."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from streams.model import CertificateStatus, CertView
from streams.rules import evaluate
from tests.builders import listing_event, status_change
from tests.integration.harness import Deployment, Guard, Worker, running_guard, wait_until_quiet

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


def expected_live(seed: int) -> dict[str, bool]:
    """What the pure rules say each listing's final state must be, whatever the timing."""
    certs, events, later = scenario_phases(seed)
    latest = {c["cert_no"]: c for c in [*certs, *later]}
    views = {
        cert: CertView(
            CertificateStatus(c["status"]), c["version"], c["category_code"], c["expires_on"]
        )
        for cert, c in latest.items()
    }
    return {
        e["listing_id"]: evaluate(e["cert_numbers"], e["category_code"], views, T0 + 30_000).passes
        for e in events
    }


def run_scenario(guard: Guard, seed: int) -> dict[str, bool]:
    """Each listing's final state (live or not) after the scenario, from its last verdict.

    Individual verdicts may differ between runs and still be right: a listing event processed
    before its certificate's first status is BLOCKed and then RESTOREd, and which of two changed
    certificates re-checks a listing first depends on which partition is read first. What every
    run must agree on is where each listing ends up, and that each event got one decision."""
    certs, events, later = scenario_phases(seed)
    guard.feed.certificates(*certs)
    guard.feed.listings(*events)
    guard.verdicts.wait_for(
        lambda v: v["trigger"] == "LISTING_EVENT", count=len(events), timeout=120
    )
    guard.feed.certificates(*later)
    # Then the listings that the changes re-check must settle: until the final states stop
    # changing for a while.
    verdicts = wait_until_quiet(guard.verdicts, quiet=3.0, timeout=120.0)
    decided = {v["listing_id"] for v in verdicts if v["trigger"] == "LISTING_EVENT"}
    assert decided == {e["listing_id"] for e in events}
    return {v["listing_id"]: v["action"] in {"ALLOW", "RESTORE"} for v in verdicts}


def test_one_worker_two_workers_and_the_memory_store_all_end_where_the_rules_say(
    kafka: str, tmp_path: Path
) -> None:
    expected = expected_live(seed=11)
    assert 0 < sum(expected.values()) < len(expected)
    with running_guard(Deployment(kafka, tmp_path / "one")) as one:
        assert run_scenario(one, seed=11) == expected
    with running_guard(Deployment(kafka, tmp_path / "two"), workers=2) as two:
        assert run_scenario(two, seed=11) == expected
    memory = Deployment(kafka, tmp_path / "memory", extra_env={"CCC_STORE": "memory://"})
    with running_guard(memory) as in_memory:
        assert run_scenario(in_memory, seed=11) == expected


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
