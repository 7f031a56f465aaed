"""Faults under load: killed workers, a restarted broker, a rebalance, a stalled consumer.

The promise under test is at-least-once with idempotent outputs: every listing event gets a
verdict, a duplicate carries the original's verdict_id, and each listing ends where the pure
rules say for its last event and the certificates' last states, whatever happened on the way.
Individual verdicts may differ between runs (see ``test_workers.run_scenario``); final states
may not.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from localkafka import LocalKafka
from localkafka.ports import free_port
from streams.faust_adapter import EXIT_STOP_TIMED_OUT
from streams.join_protocol import Answer, Subscribe, Unsubscribe, decode_command, decode_update
from streams.listing_processor import claim_key
from streams.listing_side import ListingState, PendingCheck, event_digest
from streams.model import CertificateStatus, CertTrigger, CertView
from streams.rules import evaluate
from streams.state_codec import decode_certificate, decode_listing, decode_watch, encode_listing
from tests.builders import listing_event, status_change
from tests.integration.harness import (
    FAST_FAILOVER_ENV,
    BackgroundFeed,
    Deployment,
    Feed,
    Guard,
    StalledConsumer,
    Worker,
    duplicate_count,
    final_live,
    quiet_period,
    read_table,
    read_topic,
    running_guard,
    stop_all,
    undecided_events,
    verdict_id_conflicts,
    wait_for,
    wait_until_caught_up,
    wait_until_quiet,
)
from topics.partitioning import partition_for_key

pytestmark = pytest.mark.timeout(240)

T0 = 1_790_000_000_000
FAR = 30_000  # 2052: no certificate of these scenarios expires, so decision times do not matter
UNKNOWN_CERT = "2019010907999999"  # never published: CERTIFICATE_NOT_FOUND

Batch = tuple[list[dict[str, Any]], list[dict[str, Any]]]


@dataclass
class Scenario:
    """Certificate changes and listing events in batches, and where every listing must end."""

    batches: list[Batch]
    expected_live: dict[str, bool]

    @property
    def event_ids(self) -> set[str]:
        return {e["event_id"] for _, events in self.batches for e in events}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for _, events in self.batches for e in events]


def scenario(
    seed: int, *, listings: int = 120, batches: int = 10, prefix: str = "L", certs_from: int = 0
) -> Scenario:
    """A fixed, seeded stream: every batch creates some listings, updates others (often twice
    in a row, with other claims, so a replay re-reads several events of one listing) and
    publishes new versions of some of its 30 certificates (numbered from ``certs_from``)."""
    rng = random.Random(seed)
    certs = [f"2019010907{certs_from + n:06d}" for n in range(30)]
    statuses = ["VALID"] * 3 + ["SUSPENDED", "REVOKED", "CANCELLED"]
    versions = dict.fromkeys(certs, 1)
    latest = {
        c: status_change(c, rng.choice(statuses), 1, changed_at=T0, expires_on=FAR) for c in certs
    }
    out: list[Batch] = [(list(latest.values()), [])]
    last_event: dict[str, dict[str, Any]] = {}
    created = 0
    event_no = 0
    for batch in range(batches):
        events: list[dict[str, Any]] = []

        def emit(listing: str, kind: str, events: list[dict[str, Any]] = events) -> None:
            nonlocal event_no
            claimed = rng.sample([*certs, UNKNOWN_CERT], rng.choice([0, 1, 1, 1, 2, 3]))
            event = listing_event(
                listing,
                claimed,
                kind,
                category=rng.choice(["0907", "0907", None]),
                event_id=f"{prefix}-E{event_no}",
                occurred_at=T0 + 1_000 * event_no,
            )
            event_no += 1
            events.append(event)
            last_event[listing] = event

        for _ in range(listings // batches):
            emit(f"{prefix}-{created:04d}", "CREATED")
            created += 1
        for listing in rng.sample(sorted(last_event), min(len(last_event), listings // 8)):
            emit(listing, "UPDATED")
            if rng.random() < 0.5:
                emit(listing, "UPDATED")  # a second event of the same listing right behind
        changes = []
        for cert in rng.sample(certs, 5):
            versions[cert] += 1
            latest[cert] = status_change(
                cert,
                rng.choice(statuses),
                versions[cert],
                changed_at=T0 + 1_000 * event_no + batch,
                expires_on=FAR,
            )
            changes.append(latest[cert])
        out.append((changes, events))
    views = {
        cert: CertView(
            CertificateStatus(c["status"]), c["version"], c["category_code"], c["expires_on"]
        )
        for cert, c in latest.items()
    }
    expected = {
        listing: evaluate(e["cert_numbers"], e["category_code"], views, T0 + 10**9).passes
        for listing, e in last_event.items()
    }
    return Scenario(out, expected)


def settle(guard: Guard, event_ids: set[str], timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every verdict once each event has one, every input is processed and committed, and the
    topic is quiet; or once nothing has been decided for a while with events still undecided
    (those will not be: the test fails)."""
    decided = quiet_period(
        lambda: len(guard.verdicts.snapshot()),
        quiet=20,
        timeout=timeout,
        until=lambda: not undecided_events(guard.verdicts.snapshot(), event_ids),
    )
    if decided and not undecided_events(guard.verdicts.snapshot(), event_ids):
        # A certificate change can still be on its way (the stream skipped it in a rebalance
        # and reads it again seconds later): its re-checks are part of the outcome.
        wait_until_caught_up(guard.deployment, timeout=timeout)
    return wait_until_quiet(guard.verdicts, quiet=3.0, timeout=60.0)


def listing_states(guard: Guard, listings: set[str]) -> dict[str, Any]:
    """For a failure message: what the worker's tables and internal topics say about a few
    listings (state, claim index, subscriptions sent and answers/re-checks received)."""
    deployment = guard.deployment
    catalogue = deployment.catalogue
    table = read_table(deployment, "listings")
    claims = set(read_table(deployment, "listing-claims"))
    watches = {
        key.decode(errors="replace"): decode_watch(value)
        for key, value in read_table(deployment, "certificate-watches").items()
    }
    commands = [
        (key.decode(), decode_command(value))
        for _, _, key, value in read_topic(
            deployment.bootstrap, catalogue.certificate_commands.name, deployment.partitions
        )
    ]
    updates = read_topic(
        deployment.bootstrap, catalogue.listing_updates.name, deployment.partitions
    )
    certificates = {
        key.decode(): decode_certificate(value)
        for key, value in read_table(deployment, "certificates").items()
    }
    states: dict[str, Any] = {}
    for lid in sorted(listings)[:3]:
        value = table.get(lid.encode())
        state = None if value is None else decode_listing(value)
        states[lid] = {
            "state": state
            and {
                "claimed": state.claimed,
                "views": {c: v and (str(v.status), v.version) for c, v in state.views.items()},
                "pending": [(p.event_id, p.claimed) for p in state.pending],
                "awaiting": state.awaiting,
                "last": state.last_verdict and state.last_verdict.trigger_id,
                "live": state.live,
            },
            "certificates held": {
                cert: (str(held.view.status), held.view.version, held.fanout_done)
                for cert in (state.claimed if state else ())
                if (held := certificates.get(cert)) is not None
            },
            "claim index": sorted(
                k.split(b"\0")[0].decode() for k in claims if k.endswith(b"\0" + lid.encode())
            ),
            "watches": {
                key: (watch.token, watch.answered, watch.view and watch.view.version)
                for key, watch in watches.items()
                if state and key.split("\0")[0] in state.awaiting
            },
            "commands": [
                (cert, type(command).__name__, command.partition, command.token)
                for cert, command in commands
                if isinstance(command, Subscribe | Unsubscribe)
                and state
                and (cert in state.awaiting or cert in state.claimed)
            ],
            "updates": [
                (
                    update.cert_no,
                    type(update).__name__,
                    getattr(update, "token", None) or getattr(update, "trigger_id", None),
                    update.view and (str(update.view.status), update.view.version),
                )
                for update in (decode_update(v) for _, _, _, v in updates)
                if isinstance(update, Answer | CertTrigger)
                and state
                and update.cert_no in state.claimed
            ],
        }
    return states


def check_outcome(
    guard: Guard, verdicts: list[dict[str, Any]], expected: Scenario, workers: list[Worker]
) -> None:
    logs = "\n".join(f"--- worker {w.index} ---\n{w.log_tail(30)}" for w in workers)
    undecided = undecided_events(verdicts, expected.event_ids)
    if undecided:
        owners = {e["listing_id"] for e in expected.events if e["event_id"] in undecided}
        pytest.fail(
            f"{len(undecided)} event(s) never decided: {sorted(undecided)[:20]}; their "
            f"listings' states: {listing_states(guard, owners)}\n{logs}"
        )
    assert verdict_id_conflicts(verdicts) == {}
    live = final_live(verdicts)
    wrong = sorted(lid for lid, want in expected.expected_live.items() if live.get(lid) != want)
    detail = {
        lid: [
            (v["trigger_id"], v["action"], v["decided_at"] % 100_000)
            for v in verdicts
            if v["listing_id"] == lid
        ]
        for lid in wrong[:5]
    }
    assert not wrong, (
        f"{len(wrong)} listing(s) end in the wrong state, e.g. {detail}; "
        f"expected {[expected.expected_live[lid] for lid in wrong[:5]]}; "
        f"their states: {listing_states(guard, set(wrong))}\n{logs}"
    )
    # Nothing here is bad input: a dead letter would be a good record lost to a fault.
    dead = [d["error"] for d in guard.deadletters.snapshot()]
    assert dead == [], dead


@contextmanager
def stopping(workers: list[Worker]) -> Iterator[list[Worker]]:
    """Workers a test starts itself (``running_guard`` only stops those it started)."""
    try:
        yield workers
    finally:
        stop_all(workers)


def test_killed_worker_restarted_on_its_data_decides_everything_once_per_id(
    kafka: str, tmp_path: Path
) -> None:
    """SIGKILL mid-stream, again while the restarted worker catches up, and once more with a
    backlog: RocksDB state on disk is ahead of the committed offsets every time."""
    plan = scenario(seed=101)
    assert 0 < sum(plan.expected_live.values()) < len(plan.expected_live)
    deployment = Deployment(kafka, tmp_path, extra_env=FAST_FAILOVER_ENV)
    with running_guard(deployment) as guard, stopping([]) as restarted:
        worker = guard.workers[0]
        feed = BackgroundFeed(guard.feed, plan.batches, pause=1.0)

        wait_for(lambda: feed.sent_batches >= 3, 60, "three batches")
        worker.kill()  # 1: mid-stream
        worker = Worker(deployment, 0).start()
        restarted.append(worker)
        time.sleep(1.5)
        worker.kill()  # 2: while catching up on what arrived while it was down
        worker = Worker(deployment, 0).start()
        restarted.append(worker)
        feed.join()
        time.sleep(0.5)
        worker.kill()  # 3: with the tail of the stream unprocessed or uncommitted
        worker = Worker(deployment, 0).start()
        restarted.append(worker)

        verdicts = settle(guard, plan.event_ids)
        check_outcome(guard, verdicts, plan, restarted)
        assert worker.alive


def test_worker_rides_out_a_broker_restart(
    kafka: str, kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """The broker stops (cleanly) while the worker is busy and comes back on the same port
    and data: the same worker process reconnects, finishes what it had, and decides new
    events."""
    plan = scenario(seed=202, listings=60, batches=2, prefix="B")
    before, after = plan.batches[:2], plan.batches[2:]
    deployment = Deployment(kafka, tmp_path, extra_env=FAST_FAILOVER_ENV)
    with running_guard(deployment) as guard:
        [worker] = guard.workers
        for changes, events in before:
            guard.feed.certificates(*changes)
            guard.feed.listings(*events)
        kafka_broker.stop()  # the worker is still deciding the batch just sent
        time.sleep(3)
        kafka_broker.start()
        for changes, events in after:
            guard.feed.certificates(*changes)
            guard.feed.listings(*events)
        verdicts = settle(guard, plan.event_ids, timeout=120)
        check_outcome(guard, verdicts, plan, [worker])
        assert worker.alive, "the worker died instead of reconnecting"


def test_a_worker_joining_and_leaving_mid_stream_loses_nothing(kafka: str, tmp_path: Path) -> None:
    """Partitions move to a second worker and back while events flow."""
    plan = scenario(seed=303, prefix="R")
    deployment = Deployment(kafka, tmp_path, extra_env=FAST_FAILOVER_ENV)
    with running_guard(deployment) as guard, stopping([]) as extra:
        feed = BackgroundFeed(guard.feed, plan.batches, pause=1.0)
        wait_for(lambda: feed.sent_batches >= 2, 60, "two batches")
        second = Worker(deployment, 1).start()
        extra.append(second)
        wait_for(lambda: feed.sent_batches >= 6, 60, "six batches")
        assert second.stop() == 0
        feed.join()
        verdicts = settle(guard, plan.event_ids)
        check_outcome(guard, verdicts, plan, [guard.workers[0], second])
        assert guard.workers[0].alive


def test_stalled_verdict_consumers_do_not_slow_verification(kafka: str, tmp_path: Path) -> None:
    """Two consumer groups on the verdict topic stop reading: one hung (its loop blocked, no
    heartbeats), one idle (a healthy member that never polls nor commits). A burst of events is
    still decided at full speed."""
    plan = scenario(seed=404, listings=200, batches=1, prefix="S")
    (certs, _), (changes, burst) = plan.batches
    deployment = Deployment(kafka, tmp_path)
    with running_guard(deployment) as guard:
        guard.feed.certificates(*certs, *changes)
        guard.feed.listings(listing_event("S-warm-up", [certs[0]["cert_no"]]))
        guard.wait_verdicts("S-warm-up", timeout=60)
        topic = deployment.catalogue.verdicts.name
        hung = StalledConsumer(kafka, topic, f"{deployment.name}-hung", freeze=True)
        idle = StalledConsumer(kafka, topic, f"{deployment.name}-idle", freeze=False)
        try:
            assert hung.assigned and idle.assigned
            started = time.monotonic()
            guard.feed.listings(*burst)
            guard.verdicts.wait_for(
                lambda v: v["trigger"] == "LISTING_EVENT" and v["listing_id"] != "S-warm-up",
                count=len(burst),
                timeout=60,
            )
            elapsed = time.monotonic() - started
        finally:
            hung.close()
            idle.close()
        verdicts = wait_until_quiet(guard.verdicts)
        check_outcome(guard, [v for v in verdicts if v["listing_id"] != "S-warm-up"], plan, [])
        # 200 events in well under the time a blocked pipeline would take; generous for CI.
        assert elapsed < 30, f"{len(burst)} events took {elapsed:.1f}s"
        assert duplicate_count(verdicts) == 0


def test_a_check_left_awaiting_a_lost_answer_asks_again(kafka: str, tmp_path: Path) -> None:
    """The safety net under every fault above: a listing state (recovered from its changelog)
    awaits the answer to a subscription that was lost. The worker finds it after recovery, asks
    again with the same token, indexes the claim and decides the check."""
    cert = "2019010907000001"
    deployment = Deployment(kafka, tmp_path, extra_env={"CCC_REASK_AFTER_SECONDS": "1"})
    deployment.create_topics()
    catalogue = deployment.catalogue
    feed = Feed(kafka, catalogue)
    feed.certificates(status_change(cert, "VALID", 1, changed_at=T0, expires_on=FAR))
    token = event_digest("E-lost")
    lost = ListingState(
        "jd",
        "S-1",
        "0907",
        claimed=(cert,),
        pending=[PendingCheck("E-lost", T0, (cert,), "0907")],
        recent_events=(token,),
        awaiting={cert: token},
        partition=partition_for_key(b"L-lost", catalogue.listing_events.partitions),
    )
    changelog = dict(catalogue.changelogs)["listings"].name
    # Keyed like the listing events, so the default partitioner puts it on the partition the
    # state names, where Faust would.
    feed.raw(changelog, b"L-lost", encode_listing(lost))

    with running_guard(deployment) as guard:
        [verdict] = guard.wait_verdicts("L-lost", timeout=60)
        assert (verdict["trigger_id"], verdict["action"]) == ("E-lost", "ALLOW")
        assert claim_key(cert, lost.partition, "L-lost") in read_table(deployment, "listing-claims")
        assert "asked again for 1 certificate answer(s) of 1 listing(s)" in (
            guard.workers[0].log_tail(200)
        )


def silence_after_kill(deployment: Deployment, guard: Guard, prefix: str) -> float:
    """SIGKILL the worker, restart it at once on its data, and publish a new listing every
    0.2 s from the kill on: seconds from the kill until the first of them is decided. Every
    probe is decided in the end; the restarted worker is left running."""
    cert = "2024010907000001"
    guard.feed.certificates(status_change(cert))
    guard.feed.listings(listing_event(f"{prefix}-warm", [cert]))
    guard.wait_verdicts(f"{prefix}-warm", timeout=60)
    probes: set[str] = set()

    def decided() -> set[str]:
        return {
            r["listing_id"] for r in guard.verdicts.snapshot(lambda r: r["listing_id"] in probes)
        }

    killed = time.monotonic()
    guard.workers[0].kill()
    guard.workers.append(Worker(deployment, 0).launch())
    while not decided():
        assert time.monotonic() - killed < 120, (
            f"no verdict 120 s after the kill\n{guard.workers[-1].log_tail()}"
        )
        probe = f"{prefix}-{len(probes)}"
        guard.feed.listings(listing_event(probe, [cert]))
        probes.add(probe)
        time.sleep(0.2)
    silence = time.monotonic() - killed
    wait_for(lambda: decided() == probes, 60, "a verdict for every probe")
    return silence


def test_a_worker_killed_and_restarted_under_its_instance_id_decides_again_within_10_s(
    kafka: str, tmp_path: Path
) -> None:
    """Static membership: the restarted worker takes its partitions back under its instance
    id without waiting for its dead session (Faust's default 60 s here, not the fault tests'
    10 s) and without a rebalance."""
    # A static member gets back the assignment its previous life was given, which names that
    # life's web URL (Faust checks it): the restarted worker keeps its port, as a pod does.
    static = {"CCC_GROUP_INSTANCE_ID": "worker-0", "CCC_WEB_PORT": str(free_port())}
    deployment = Deployment(kafka, tmp_path, extra_env=static)
    with running_guard(deployment) as guard:
        silence = silence_after_kill(deployment, guard, "S")
        print(f"verdicts resumed {silence:.1f} s after the kill")
        assert silence < 10, f"no verdict for {silence:.1f} s after the kill"


def test_a_worker_told_to_stop_with_its_broker_gone_exits_within_its_stop_timeout(
    kafka: str, kafka_broker: LocalKafka, tmp_path: Path
) -> None:
    """With the broker away, Faust's stop can wait for it forever: the worker exits within
    CCC_STOP_TIMEOUT_SECONDS of SIGTERM all the same, and loses nothing by it."""
    env = {**FAST_FAILOVER_ENV, "CCC_STOP_TIMEOUT_SECONDS": "8"}
    deployment = Deployment(kafka, tmp_path, extra_env=env)
    cert = "2024010907000002"
    with running_guard(deployment) as guard:
        guard.feed.certificates(status_change(cert))
        guard.feed.listings(listing_event("T-before", [cert]))
        guard.wait_verdicts("T-before", timeout=60)
        [worker] = guard.workers
        kafka_broker.stop()
        try:
            time.sleep(3)  # the worker notices: fetches and heartbeats fail
            told = time.monotonic()
            code = worker.stop(timeout=60)
            took = time.monotonic() - told
        finally:
            kafka_broker.start()
        assert took < 8 + 5, f"exited {took:.1f} s after SIGTERM\n{worker.log_tail()}"
        assert code in (0, EXIT_STOP_TIMED_OUT), worker.log_tail()
        print(f"exited {took:.1f} s after SIGTERM with code {code}")
        # Restarted on its data, it goes on where the last commit left it.
        guard.workers.append(Worker(deployment, 0).start())
        guard.feed.listings(listing_event("T-after", [cert]))
        assert guard.wait_verdicts("T-after", timeout=60)[0]["action"] == "ALLOW"


def remake_changelogs(deployment: Deployment) -> None:
    """Delete the deployment's changelog topics and create them again, empty."""

    async def run() -> None:
        names = [spec.name for _, spec in deployment.catalogue.changelogs]
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(names)
            for _ in range(100):
                if not set(names) & set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    asyncio.run(run())
    for _ in range(50):  # the broker may still be finishing the deletion
        try:
            deployment.create_topics()
            return
        except Exception:
            time.sleep(0.5)
    deployment.create_topics()


def test_a_worker_on_another_changelogs_state_moves_it_aside_and_rebuilds(
    kafka: str, tmp_path: Path
) -> None:
    """A data directory whose state was written against changelogs that are gone: the worker
    neither crash-loops (Faust's ConsistencyError) nor serves that state. It moves each stale
    partition store aside, says so, and rebuilds from the changelog it sees."""
    deployment = Deployment(kafka, tmp_path, extra_env=FAST_FAILOVER_ENV)
    cert = "2024010907000003"
    with running_guard(deployment) as guard:
        guard.feed.certificates(status_change(cert))
        guard.feed.listings(listing_event("C-old", [cert]))
        assert guard.wait_verdicts("C-old", timeout=60)[0]["action"] == "ALLOW"
        [worker] = guard.workers
        assert worker.stop() == 0
        remake_changelogs(deployment)

        restarted = Worker(deployment, 0).start()
        guard.workers.append(restarted)
        # The certificate is known only to the stale state: served, it would allow this one.
        guard.feed.listings(listing_event("C-new", [cert]))
        [verdict] = guard.wait_verdicts("C-new", timeout=60)
        assert verdict["action"] == "BLOCK"
        assert verdict["reasons"] == ["CERTIFICATE_NOT_FOUND"]
        moved = sorted(p.name for p in (tmp_path / "worker-0").rglob("*.stale-*"))
        assert any(name.startswith("certificates") for name in moved), moved
        assert "moved aside to" in restarted.output()
        assert restarted.alive
