"""Chaos under load: a steady feed while faults strike at random moments, judged by the pure rules.

The feed is the fault tests' scenario (listings created and updated, certificates changing) plus
a hot certificate claimed by many listings, whose status flips now and then so that a fan-out is
often under way. Faults, in a seeded random order and at random moments:

- ``kill``: SIGKILL of the first worker right after a flip of the hot certificate (in the middle
  of its fan-out), restarted at once on its data;
- ``join``: a second worker joins, and leaves a few seconds later;
- ``broker``: the broker stops and comes back on the same port and data;
- ``wipe``: the first worker is killed, its data directory deleted, and it starts again empty.

Judged as the fault tests are: every listing event has a verdict, every listing ends where the
pure rules put it, repeated ``verdict_id``s carry one action, no listing is left awaiting an
answer, nothing is dead-lettered. Reported: events, faults, duplicates per event, and the longest
silence on the verdict topic while the feed ran.

The short run is part of ``make test``; ``make chaos`` runs it for ``CHAOS_MINUTES`` (30) with a
``CHAOS_SEED`` (printed; random when unset). Not ``CCC_*`` variables: workers inherit the
environment and refuse unknown ``CCC_*`` settings.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localkafka import LocalKafka
from streams.state_codec import decode_listing
from tests.builders import listing_event, status_change
from tests.integration.harness import (
    FAST_FAILOVER_ENV,
    BackgroundFeed,
    Deployment,
    Guard,
    Worker,
    duplicate_count,
    read_table,
    running_guard,
    stop_all,
    wait_for,
)
from tests.integration.test_faults import FAR, T0, Batch, Scenario, check_outcome, scenario, settle

MINUTES = float(os.environ.get("CHAOS_MINUTES", "1.5"))
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
HOT_CERT = "2023010907777777"
HOT_LISTINGS = 1_000
FAULTS = ("kill", "join", "broker", "wipe")
BATCH_PAUSE_S = 1.0  # one batch of the scenario a second
SEGMENT_BATCHES = 10

pytestmark = pytest.mark.timeout(int(MINUTES * 60) + 600)


@dataclass
class Report:
    events: int
    faults: list[str] = field(default_factory=list)
    duplicates_per_event: float = 0.0
    longest_silence_s: float = 0.0


def chaos_scenario(rng: random.Random, seconds: float) -> tuple[Scenario, list[dict[str, Any]]]:
    """``seconds`` of the fault tests' scenario, one batch a second, in segments of ten batches
    on certificates of their own (~35 listing events a batch), with the hot certificate's
    listings created in the first batch; and the hot certificate's flips, one to publish at each
    fault and the rest after the feed (the last one decides where the hot listings end)."""
    batches: list[Batch] = []
    expected: dict[str, bool] = {}
    for segment in range(max(1, round(seconds / SEGMENT_BATCHES))):
        part = scenario(
            rng.randrange(1 << 30),
            batches=SEGMENT_BATCHES,
            prefix=f"C{segment}",
            certs_from=30 * segment,
        )
        batches += part.batches
        expected |= part.expected_live
    hot = [
        listing_event(f"H-{n:04d}", [HOT_CERT], event_id=f"H-E{n}", occurred_at=T0 + n)
        for n in range(HOT_LISTINGS)
    ]
    first_changes, first_events = batches[0]
    status = status_change(HOT_CERT, "VALID", 1, changed_at=T0, expires_on=FAR)
    batches[0] = ([*first_changes, status], [*first_events, *hot])
    flips = [
        status_change(
            HOT_CERT,
            "SUSPENDED" if version % 2 == 0 else "VALID",
            version,
            changed_at=T0 + 10_000_000 + version,
            expires_on=FAR,
        )
        for version in range(2, 10 + int(seconds) // 2)  # more than the faults can take
    ]
    last_valid = flips[-1]["status"] == "VALID"
    expected |= {e["listing_id"]: last_valid for e in hot}
    return Scenario(batches, expected), flips


def inject(
    fault: str, guard: Guard, deployment: Deployment, broker: LocalKafka, flip: dict[str, Any]
) -> None:
    first = guard.workers[0]
    if fault == "kill":
        guard.feed.certificates(flip)
        time.sleep(0.3)  # the fan-out to the hot certificate's listings has begun
        first.kill()
        guard.workers[0] = Worker(deployment, 0).start()
    elif fault == "join":
        guard.feed.certificates(flip)
        second = Worker(deployment, 1).start()
        guard.workers.append(second)
        time.sleep(5)
        assert second.stop() == 0, second.log_tail()
    elif fault == "broker":
        guard.feed.certificates(flip)
        broker.stop()
        time.sleep(3)
        broker.start()
    elif fault == "wipe":
        first.kill()
        shutil.rmtree(deployment.root / "worker-0")
        guard.feed.certificates(flip)
        guard.workers[0] = Worker(deployment, 0).start()


def longest_silence(arrivals: list[float], start: float, end: float) -> float:
    moments = [start, *sorted(t for t in arrivals if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(moments))


def left_awaiting(deployment: Deployment) -> list[str]:
    states = read_table(deployment, "listings")
    return sorted(key.decode() for key, value in states.items() if decode_listing(value).awaiting)


def test_chaos_under_load_loses_nothing(
    kafka: str, kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    print(f"\nchaos: seed {SEED} (CHAOS_SEED={SEED} repeats it), {MINUTES} min")
    plan, flips = chaos_scenario(rng, MINUTES * 60)
    deployment = Deployment(kafka, tmp_path, extra_env=FAST_FAILOVER_ENV)
    report = Report(events=len(plan.event_ids))
    with running_guard(deployment) as guard:
        started = time.monotonic()
        feed = BackgroundFeed(guard.feed, plan.batches, pause=BATCH_PAUSE_S)
        wait_for(lambda: feed.sent_batches >= 3, 60, "the first batches")
        order = list(FAULTS)
        rng.shuffle(order)
        flip_at = 0
        while not feed.done:
            fault = order[len(report.faults) % len(order)]
            inject(fault, guard, deployment, kafka_broker, flips[flip_at])
            report.faults.append(fault)
            flip_at += 1
            time.sleep(rng.uniform(2, 8))
        feed.join()
        fed = time.monotonic()
        for flip in flips[flip_at:]:  # the hot certificate ends on its last flip
            guard.feed.certificates(flip)
        verdicts = settle(guard, plan.event_ids, timeout=300)
        stop_all(guard.workers[1:])
        check_outcome(guard, verdicts, plan, guard.workers)
        assert left_awaiting(deployment) == []
        report.duplicates_per_event = duplicate_count(verdicts) / report.events
        arrivals = [v["_arrived"] for v in verdicts]
        report.longest_silence_s = longest_silence(arrivals, started, fed)
        print(
            f"chaos: seed {SEED}: {report.events} listing events, {len(report.faults)} faults "
            f"({', '.join(report.faults)}), {report.duplicates_per_event:.3f} duplicates per "
            f"event, longest verdict silence {report.longest_silence_s:.1f} s"
        )
        assert set(report.faults) == set(FAULTS), "the run was too short for every fault"
