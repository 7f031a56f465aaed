"""Properties of the whole join, in process: random listing events and certificate changes,
placed by any of the three partitioners, processed in any interleaving of the partitions, with
commits and crashes at random points (a crash reads again every record since the last commit).

Judged against a clean run and against the rules: every listing event gets its verdict, an
event's verdict never changes when said again, nothing is left awaiting, and the final
decisions are the rules' decisions on the final claims and certificates, whatever happened.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.model import VerdictReason, VerdictTrigger
from streams.rules import evaluate
from streams.state_codec import decode_certificate, decode_listing, decode_watch
from tests.builders import listing_event, status_change
from tests.inprocess import PARTITIONERS, InProcessJoin

CERTS = [f"2020010907{n:06d}" for n in range(5)]
CLAIMS = [*CERTS, "2020O10907000009", "2020019999000001"]  # malformed, never issued
LISTINGS = [f"L-{n}" for n in range(8)]
STATUSES = ("VALID", "VALID", "SUSPENDED", "REVOKED", "EXPIRED")

Op = tuple[str, Any]

ops = st.one_of(
    st.tuples(
        st.just("listing"),
        st.tuples(
            st.sampled_from(LISTINGS),
            st.sampled_from(("CREATED", "UPDATED", "UPDATED", "DELISTED")),
            st.lists(st.sampled_from(CLAIMS), max_size=3, unique=True),
        ),
    ),
    st.tuples(st.just("cert"), st.tuples(st.sampled_from(CERTS), st.sampled_from(STATUSES))),
    st.tuples(st.just("steps"), st.integers(1, 8)),
    st.tuples(st.just("commit"), st.none()),
    st.tuples(st.just("crash"), st.none()),
)


def _records(script: list[Op]) -> list[tuple[str, dict[str, Any]]]:
    """The script's records, with event ids, versions and times made concrete."""
    versions: dict[str, int] = defaultdict(int)
    records: list[tuple[str, dict[str, Any]]] = []
    at = 1_795_000_000_000
    for n, (kind, arg) in enumerate(script):
        at += 1_000
        if kind == "listing":
            lid, event_type, claimed = arg
            claims = [] if event_type == "DELISTED" else claimed
            event = listing_event(lid, claims, event_type, event_id=f"E-{n}", occurred_at=at)
            records.append(("listing", event))
        elif kind == "cert":
            cert, status = arg
            versions[cert] += 1
            records.append(("cert", status_change(cert, status, versions[cert], changed_at=at)))
        else:
            records.append((kind, arg))
    return records


async def _play(
    join: InProcessJoin, records: list[tuple[str, Any]], rng: random.Random | None
) -> None:
    for kind, arg in records:
        if kind == "listing":
            join.publish_listing(arg)
        elif kind == "cert":
            join.publish_certificate(arg)
        elif rng is None:
            continue  # the clean run: no interleaving, no faults
        elif kind == "steps":
            for _ in range(arg):
                ready = join.pending()
                if ready:
                    await join.step(*rng.choice(ready))
        elif kind == "commit":
            join.commit()
        elif kind == "crash":
            join.crash()
    await join.run(rng)


def _final(join: InProcessJoin) -> dict[str, tuple[bool, tuple[VerdictReason, ...]]]:
    decisions = {}
    for key, value in join.listings.items():
        state = decode_listing(value)
        assert not state.awaiting, (key, state.awaiting)
        assert not state.pending, (key, state.pending)
        if not state.delisted:
            decisions[key.decode()] = (state.live, state.reasons)
    return decisions


def _by_the_rules(join: InProcessJoin) -> dict[str, tuple[bool, tuple[VerdictReason, ...]]]:
    views = {k.decode(): decode_certificate(v).view for k, v in join.certificates.items()}
    decisions = {}
    for key, value in join.listings.items():
        state = decode_listing(value)
        if not state.delisted:
            held = {c: views.get(c) for c in state.claimed}
            evaluation = evaluate(state.claimed, state.category, held, state.clock_ms)
            decisions[key.decode()] = (evaluation.passes, evaluation.reasons)
    return decisions


@given(
    script=st.lists(ops, min_size=1, max_size=40),
    partitioner=st.sampled_from(sorted(PARTITIONERS)),
    partitions=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_faults_and_partitioners_change_no_final_decision(
    script: list[Op], partitioner: str, partitions: int, seed: int
) -> None:
    records = _records(script)
    clean = InProcessJoin(partitions, PARTITIONERS["murmur2"])
    asyncio.run(_play(clean, records, None))
    faulty = InProcessJoin(partitions, PARTITIONERS[partitioner])
    asyncio.run(_play(faulty, records, random.Random(seed)))

    assert _final(faulty) == _final(clean) == _by_the_rules(faulty)

    events = {r["event_id"]: r for kind, r in records if kind == "listing"}
    said: dict[tuple[str, str], set[str]] = defaultdict(set)
    for verdict in faulty.verdicts:
        if verdict.trigger is VerdictTrigger.LISTING_EVENT:
            said[(verdict.listing_id, verdict.trigger_id)].add(str(verdict.action))
    decided = {event_id for _, event_id in said}
    expected = {e for e, r in events.items() if r["event_type"] != "DELISTED"}
    assert expected <= decided, sorted(expected - decided)
    assert all(len(actions) == 1 for actions in said.values()), said

    # Every watch with claimers is answered; every watch has a subscription behind it.
    for key, value in faulty.watches.items():
        watch = decode_watch(value)
        subscription = faulty.subscriptions.get(key)
        assert watch.answered, key
        assert subscription == watch.token.encode(), key
        assert any(k.startswith(key + b"\0") for k in faulty.claims), key
