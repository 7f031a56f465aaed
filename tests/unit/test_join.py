"""The join's processors in process (``tests/inprocess.py``): dict tables, an in-process log,
the real handlers and codecs. Partition addressing, per-partition watches, fan-out by
partition, and the same final verdicts whichever partitioner placed the input."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from streams.join_protocol import (
    Answer,
    Expire,
    Subscribe,
    Unsubscribe,
    decode_command,
    decode_update,
    encode_command,
    encode_update,
)
from streams.listing_processor import claim_key
from streams.listing_side import PendingCheck
from streams.model import (
    CertificateStatus,
    CertTrigger,
    VerdictAction,
    VerdictReason,
    VerdictTrigger,
    VerdictWarning,
)
from streams.rules import RULES_VERSION, ModelPolicy, Rules, evaluate
from streams.state_codec import decode_certificate, decode_listing, encode_listing
from tests.builders import cert_no, listing_event, status_change
from tests.inprocess import PARTITIONERS, InProcessJoin

ALLOW, BLOCK = VerdictAction.ALLOW, VerdictAction.BLOCK
TAKEDOWN, RESTORE = VerdictAction.TAKEDOWN, VerdictAction.RESTORE


def _at(join: InProcessJoin, partition: int, n: int, prefix: str = "L") -> list[str]:
    """``n`` listing ids the join's partitioner puts on ``partition``."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        lid = f"{prefix}-{i}"
        if join.partitioner(lid.encode(), join.partitions) == partition:
            found.append(lid)
        i += 1
    return found


def _commands(join: InProcessJoin) -> list[tuple[str, object]]:
    return [(k.decode(), decode_command(v)) for _, k, v in join.topics["commands"].sent if k]


def test_a_second_listing_on_a_watched_certificate_is_decided_without_a_round_trip() -> None:
    join = InProcessJoin()
    cert = cert_no()
    first, second = _at(join, 1, 2)
    join.publish_certificate(status_change(cert))
    join.publish_listing(listing_event(first, [cert]))
    join.run_sync()
    assert [(v.listing_id, v.action) for v in join.verdicts] == [(first, ALLOW)]
    updates_before = len(join.topics["updates"].sent)

    join.publish_listing(listing_event(second, [cert]))
    assert join.run_sync() == 1  # the listing event alone: no command, no answer
    assert [(v.listing_id, v.action) for v in join.verdicts][-1] == (second, ALLOW)
    assert len(join.topics["updates"].sent) == updates_before
    assert [c for _, c in _commands(join)] == [Subscribe(1, _token(join, cert, 1))]


def _token(join: InProcessJoin, cert: str, partition: int) -> str:
    [command] = [c for k, c in _commands(join) if k == cert and isinstance(c, Subscribe)][:1]
    assert isinstance(command, Subscribe) and command.partition == partition
    return command.token


def test_answers_and_rechecks_go_to_the_listings_own_partition_by_number() -> None:
    # crc32 puts listing ids elsewhere than murmur2: a re-hash would miss their state.
    join = InProcessJoin(partitions=6, partitioner=PARTITIONERS["crc32"])
    cert = cert_no()
    listings = [lid for p in range(6) for lid in _at(join, p, 2)]
    join.publish_certificate(status_change(cert))
    for lid in listings:
        join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    assert {v.listing_id: v.action for v in join.verdicts} == dict.fromkeys(listings, ALLOW)
    answers = [(p, decode_update(v)) for p, _, v in join.topics["updates"].sent]
    assert sorted(p for p, _ in answers) == list(range(6))  # one answer per partition

    join.publish_certificate(status_change(cert, "REVOKED", 2))
    join.run_sync()
    rechecks = [(p, decode_update(v)) for p, _, v in join.topics["updates"].sent][len(answers) :]
    assert sorted(p for p, _ in rechecks) == list(range(6))  # one re-check per partition
    assert all(isinstance(update, CertTrigger) for _, update in rechecks)
    assert {v.listing_id: v.action for v in join.verdicts[len(listings) :]} == dict.fromkeys(
        listings, TAKEDOWN
    )


def test_the_last_claimer_leaving_closes_the_watch_and_its_subscription() -> None:
    join = InProcessJoin()
    cert, other = cert_no(), cert_no()
    a, b = _at(join, 2, 2)
    join.publish_certificate(status_change(cert))
    join.publish_certificate(status_change(other))
    join.publish_listing(listing_event(a, [cert]))
    join.publish_listing(listing_event(b, [cert]))
    join.run_sync()
    assert len(join.subscriptions) == 1 and len(join.watches) == 1

    join.publish_listing(listing_event(a, [other], "UPDATED"))
    join.run_sync()
    assert not any(isinstance(c, Unsubscribe) for k, c in _commands(join) if k == cert)
    join.publish_listing(listing_event(b, [], "DELISTED"))
    join.run_sync()
    [unsubscribe] = [c for k, c in _commands(join) if k == cert and isinstance(c, Unsubscribe)]
    assert unsubscribe == Unsubscribe(2, _token(join, cert, 2))
    assert [k for k in join.subscriptions if k.startswith(cert.encode())] == []

    sent = len(join.topics["updates"].sent)
    join.publish_certificate(status_change(cert, "REVOKED", 2))
    join.run_sync()
    assert len(join.topics["updates"].sent) == sent  # nobody on partition 2 claims it now


def test_a_new_claimer_after_the_expiry_sweep_gets_the_expiry_recheck_too() -> None:
    join = InProcessJoin()
    cert = cert_no()
    today = join.now // 86_400_000
    a, b = _at(join, 0, 2)
    join.publish_certificate(status_change(cert, expires_on=today + 1))
    join.publish_listing(listing_event(a, [cert], occurred_at=join.now))
    join.run_sync()
    join.now += 3 * 86_400_000
    # What the expiry sweep sends: an Expire command on the certificate's own partition.
    key = cert.encode()
    partition = join.certificate_side.partition_of(key)
    join.topics["commands"].append(partition, key, encode_command(Expire(join.now)))
    join.run_sync()
    assert join.last_verdicts()[a].action is TAKEDOWN
    # A listing event stamped before the expiry, read after it: it must not stay live.
    join.publish_listing(listing_event(b, [cert], occurred_at=join.now - 2 * 86_400_000))
    join.run_sync()
    assert [v.action for v in join.verdicts if v.listing_id == b] == [ALLOW, TAKEDOWN]


def test_a_record_processed_twice_changes_nothing_and_says_the_same_verdicts() -> None:
    join = InProcessJoin()
    cert = cert_no()
    [lid] = _at(join, 3, 1)
    join.publish_certificate(status_change(cert))
    join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    listings_before = dict(join.listings)
    verdicts_before = list(join.verdicts)
    join.crash()  # no commit yet: every record is read again
    join.run_sync()
    assert join.listings == listings_before
    replayed = {v.verdict_id: v.action for v in join.verdicts}
    assert replayed == {v.verdict_id: v.action for v in verdicts_before}


def test_an_unknown_certificate_blocks_and_its_first_sighting_restores() -> None:
    join = InProcessJoin()
    cert = cert_no()
    [lid] = _at(join, 1, 1)
    join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    [blocked] = join.verdicts
    assert blocked.action is BLOCK and blocked.reasons == (VerdictReason.CERTIFICATE_NOT_FOUND,)
    join.publish_certificate(status_change(cert))
    join.run_sync()
    assert join.last_verdicts()[lid].action is RESTORE


@pytest.mark.parametrize("seed", range(6))
def test_same_final_decisions_whichever_partitioner_and_interleaving(seed: int) -> None:
    rng = random.Random(seed)
    certs = [cert_no() for _ in range(8)]
    statuses = ("VALID", "VALID", "VALID", "REVOKED", "SUSPENDED")
    script: list[tuple[str, object]] = []
    versions = dict.fromkeys(certs, 1)
    for c in certs[:6]:
        script.append(("cert", status_change(c, rng.choice(statuses), 1)))
    for n in range(60):
        lid = f"L-{rng.randrange(25)}"
        kind = rng.choice(("CREATED", "UPDATED", "UPDATED", "DELISTED"))
        claimed = [] if kind == "DELISTED" else rng.sample(certs, rng.choice((1, 1, 2)))
        script.append(("listing", listing_event(lid, claimed, kind)))
        if n % 7 == 0:
            c = rng.choice(certs)
            versions[c] += 1
            script.append(("cert", status_change(c, rng.choice(statuses), versions[c])))

    finals = {}
    for name, partitioner in PARTITIONERS.items():
        join = InProcessJoin(partitions=5, partitioner=partitioner)
        interleave = random.Random(seed * 31)
        for kind, record in script:
            if kind == "cert":
                join.publish_certificate(record)  # type: ignore[arg-type]
            else:
                join.publish_listing(record)  # type: ignore[arg-type]
            if interleave.random() < 0.3:
                asyncio_run_some(join, interleave)
        join.run_sync(interleave)
        finals[name] = _decisions(join)
    assert finals["crc32"] == finals["murmur2"] == finals["fnv1a"]
    # And they are what the rules say of each listing's final claim and certificates.
    for lid, (live, reasons) in finals["murmur2"].items():
        assert (live, reasons) == _expected(join, lid)


def asyncio_run_some(join: InProcessJoin, rng: random.Random) -> None:
    async def some() -> None:
        for _ in range(rng.randrange(1, 6)):
            ready = join.pending()
            if not ready:
                return
            await join.step(*rng.choice(ready))

    asyncio.run(some())


def _any_awaiting(join: InProcessJoin) -> bool:
    return any(decode_listing(v).awaiting for v in join.listings.values())


def _decisions(join: InProcessJoin) -> dict[str, tuple[bool, tuple[VerdictReason, ...]]]:
    assert not _any_awaiting(join)
    out = {}
    for key, value in join.listings.items():
        state = decode_listing(value)
        if not state.delisted:
            out[key.decode()] = (state.live, state.reasons)
    return out


def _expected(join: InProcessJoin, lid: str) -> tuple[bool, tuple[VerdictReason, ...]]:
    state = decode_listing(join.listings[lid.encode()])
    views = {k.decode(): decode_certificate(v).view for k, v in join.certificates.items()}
    evaluation = evaluate(
        state.claimed, state.category, {c: views.get(c) for c in state.claimed}, state.clock_ms
    )
    return evaluation.passes, evaluation.reasons


def test_the_reask_repairs_a_listing_recovered_awaiting_without_its_watch_or_claims() -> None:
    join = InProcessJoin()
    cert = cert_no()
    [lid] = _at(join, 2, 1)
    join.publish_certificate(status_change(cert))
    join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    [allowed] = join.verdicts
    # As if the claim index and watch writes were lost and the listing's state went back to
    # awaiting its answer: nothing would ever answer it but the safety net.
    key = lid.encode()
    state = decode_listing(join.listings[key])
    state.awaiting = {cert: "t-lost"}
    state.pending = [PendingCheck(allowed.trigger_id, allowed.event_time, (cert,), "0907")]
    join.listings[key] = encode_listing(state)
    join.claims.clear()
    join.watches.clear()

    request = join.listing_side.reask_request(key)
    assert request is not None
    partition, reask, answers = request
    assert (partition, answers) == (2, 1)
    join.topics["updates"].append(partition, key, encode_update(reask))
    join.run_sync()
    assert join.verdicts[-1].verdict_id == allowed.verdict_id  # decided, same verdict id
    assert claim_key(cert, 2, lid) in join.claims
    assert not decode_listing(join.listings[key]).awaiting
    assert join.listing_side.reask_request(key) is None


def test_the_authority_feed_takes_a_hop_only_when_its_producer_partitioned_elsewhere() -> None:
    for name, hops in (("murmur2", 0), ("crc32", 1)):
        join = InProcessJoin(partitions=8, partitioner=PARTITIONERS[name])
        # A certificate number crc32 and murmur2 place on different partitions.
        cert = next(
            c
            for c in (cert_no() for _ in range(100))
            if PARTITIONERS["crc32"](c.encode(), 8) != PARTITIONERS["murmur2"](c.encode(), 8)
        )
        join.publish_certificate(status_change(cert))
        join.run_sync()
        assert len(join.topics["changes"].sent) == hops, name
        assert cert.encode() in join.certificates


def test_a_repeated_answer_decides_only_the_claimers_still_awaiting_and_a_replay_all() -> None:
    join = InProcessJoin()
    cert = cert_no()
    listings = _at(join, 3, 20)
    for lid in listings:  # all before the certificate: they wait on one subscription
        join.publish_listing(listing_event(lid, [cert]))
    join.publish_certificate(status_change(cert))
    join.run_sync()
    assert sorted(v.listing_id for v in join.verdicts) == sorted(listings)
    [answer] = [(k, v) for p, k, v in join.topics["updates"].sent if p == 3]
    join.commit()

    # A re-ask's subscription brings the same answer again, later in the partition: only a
    # listing that still awaits the certificate (here: as if its answer write was lost) is
    # decided; the others' verdicts are not said again.
    key = listings[0].encode()
    state = decode_listing(join.listings[key])
    state.awaiting = {cert: "t-lost"}
    state.pending = [PendingCheck("E-again", 0, (cert,), "0907")]
    join.listings[key] = encode_listing(state)
    join.topics["updates"].append(3, *answer)
    verdicts = len(join.verdicts)
    join.run_sync()
    assert [v.listing_id for v in join.verdicts[verdicts:]] == [listings[0]]
    join.commit()

    # A crash replays the first answer itself: every claimer's verdict is said again.
    join.topics["updates"].committed[3] = 0
    join.crash()
    verdicts = len(join.verdicts)
    join.run_sync()
    said_again = [v.listing_id for v in join.verdicts[verdicts:]]
    assert set(listings) <= set(said_again)


def test_an_answer_newer_than_a_claimers_view_re_checks_it_as_that_change() -> None:
    """A partition not subscribed when a change was fanned out (its watch closed and opened
    again around it) hears of the change only in a later answer: every claimer behind it is
    re-checked, with the verdict id the fan-out itself would have given."""
    join = InProcessJoin()
    cert = cert_no()
    listings = _at(join, 2, 3)
    join.publish_certificate(status_change(cert, "VALID", 1))
    for lid in listings:
        join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    assert {v.listing_id: v.action for v in join.verdicts} == dict.fromkeys(listings, ALLOW)
    [(key, value)] = [(k, v) for p, k, v in join.topics["updates"].sent if p == 2]
    first = decode_update(value)
    assert isinstance(first, Answer) and first.view is not None
    revoked = replace(first.view, status=CertificateStatus.REVOKED, version=2)
    join.topics["updates"].append(2, key, encode_update(replace(first, view=revoked, changed_at=7)))
    said = len(join.verdicts)
    join.run_sync()
    takedowns = join.verdicts[said:]
    assert {v.listing_id: v.action for v in takedowns} == dict.fromkeys(listings, TAKEDOWN)
    assert {v.trigger_id for v in takedowns} == {f"{cert}@2"}
    # The fan-out of that change, arriving after all, changes nothing more.
    fanout = CertTrigger(cert, revoked, VerdictTrigger.CERTIFICATE_CHANGE, f"{cert}@2", 7)
    join.topics["updates"].append(2, key, encode_update(fanout))
    said = len(join.verdicts)
    join.run_sync()
    assert {v.verdict_id for v in join.verdicts[said:]} <= {v.verdict_id for v in takedowns}


def test_a_replayed_answer_says_again_every_verdict_it_decided() -> None:
    """Two events of one listing wait on one answer; the answer decides both. A crash before
    the updates' offset is committed reads the answer again, while the events themselves are
    committed: both verdicts are said again, not only the last (the kill test's lost event)."""
    join = InProcessJoin()
    cert = cert_no()
    [lid] = _at(join, 1, 1)
    join.publish_listing(listing_event(lid, [cert], event_id="E-1"))
    join.publish_listing(listing_event(lid, [cert], "UPDATED", event_id="E-2"))
    asyncio.run(join.step("events", 1))
    asyncio.run(join.step("events", 1))
    join.publish_certificate(status_change(cert))
    join.run_sync()
    decided = {v.trigger_id: v.verdict_id for v in join.verdicts}
    assert set(decided) == {"E-1", "E-2"}

    join.topics["events"].commit()
    join.crash()
    said = len(join.verdicts)
    join.run_sync()
    again = [v for v in join.verdicts[said:] if v.trigger_id in decided]
    assert {v.verdict_id for v in again} == set(decided.values())
    assert join.last_verdicts()[lid].trigger_id == "E-2"  # the current decision stays last


def test_what_a_repeated_answer_decided_is_said_again_when_it_is_read_again() -> None:
    """A re-ask's answer caught two listings up (TAKEDOWN); a crash before its offset is
    committed reads it again: the takedowns are said again, and stay each listing's last."""
    join = InProcessJoin()
    cert = cert_no()
    listings = _at(join, 2, 2)
    join.publish_certificate(status_change(cert, "VALID", 1))
    for lid in listings:
        join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    [(key, value)] = [(k, v) for p, k, v in join.topics["updates"].sent if p == 2]
    first = decode_update(value)
    assert isinstance(first, Answer) and first.view is not None
    join.commit()
    revoked = replace(first.view, status=CertificateStatus.REVOKED, version=2)
    join.topics["updates"].append(2, key, encode_update(replace(first, view=revoked, changed_at=7)))
    said = len(join.verdicts)
    join.run_sync()
    takedowns = {v.verdict_id for v in join.verdicts[said:]}
    assert len(takedowns) == 2

    join.crash()
    said = len(join.verdicts)
    join.run_sync()
    assert takedowns <= {v.verdict_id for v in join.verdicts[said:]}
    assert {v.action for v in join.last_verdicts().values()} == {TAKEDOWN}


def test_a_replayed_answer_says_its_verdict_again_while_a_later_check_still_waits() -> None:
    """E-1 claims C, E-2 claims C and D; C's answer decides E-1 while E-2 waits on D. Read
    again after a crash, C's answer says E-1's verdict again (it may have died)."""
    join = InProcessJoin()
    c = cert_no()
    side = join.certificate_side
    d = next(
        x
        for x in (cert_no() for _ in range(1000))
        if side.partition_of(x.encode()) != side.partition_of(c.encode())
    )
    d_partition = side.partition_of(d.encode())
    [lid] = _at(join, 1, 1)
    join.publish_listing(listing_event(lid, [c], event_id="E-1"))
    join.publish_listing(listing_event(lid, [c, d], "UPDATED", event_id="E-2"))
    asyncio.run(join.step("events", 1))
    asyncio.run(join.step("events", 1))
    join.topics["events"].commit()
    join.publish_certificate(status_change(c))

    async def all_but_d() -> None:  # D's certificate partition never answers
        while ready := [r for r in join.pending() if r != ("commands", d_partition)]:
            await join.step(*ready[0])

    asyncio.run(all_but_d())
    [first] = join.verdicts
    assert first.trigger_id == "E-1"
    join.crash()
    said = len(join.verdicts)
    asyncio.run(all_but_d())
    assert first.verdict_id in {v.verdict_id for v in join.verdicts[said:]}


# --- the model rule and the evidence, through the codecs ------------------------------------


def test_each_platform_chooses_whether_a_model_mismatch_blocks_or_warns() -> None:
    join = InProcessJoin(rules=Rules(ModelPolicy.WARN, {"tmall": ModelPolicy.BLOCK}))
    cert = cert_no()
    join.publish_certificate(status_change(cert, models=("KX-100、KX-200",)))
    join.publish_listing(listing_event("L-jd", [cert], platform="jd", model="KX-900"))
    join.publish_listing(listing_event("L-tm", [cert], platform="tmall", model="KX-900"))
    full_width = "\uff4b\uff58\uff0d\uff12\uff10\uff10"  # kx-200, as a seller may type it
    join.publish_listing(listing_event("L-ok", [cert], platform="tmall", model=full_width))
    join.run_sync()
    verdicts = join.last_verdicts()
    warned, blocked, fine = verdicts["L-jd"], verdicts["L-tm"], verdicts["L-ok"]
    assert (warned.action, warned.reasons) == (ALLOW, ())
    assert warned.warnings == (VerdictWarning.MODEL_MISMATCH,)
    assert warned.rules_version == f"{RULES_VERSION};model=WARN"
    assert (blocked.action, blocked.reasons) == (BLOCK, (VerdictReason.MODEL_MISMATCH,))
    assert blocked.failing_certs == (cert,) and not blocked.warnings
    assert blocked.rules_version == f"{RULES_VERSION};model=BLOCK"
    assert (fine.action, fine.warnings) == (ALLOW, ())
    assert fine.evidence[0].models_matched == ("kx-200",)

    # The certificate's next version drops KX-200: the live listing on it is taken down.
    join.publish_certificate(status_change(cert, version=2, models=("KX-100",)))
    join.run_sync()
    taken_down = join.last_verdicts()["L-ok"]
    assert (taken_down.action, taken_down.reasons) == (TAKEDOWN, (VerdictReason.MODEL_MISMATCH,))
    assert join.last_verdicts()["L-jd"] == warned  # under WARN a re-check does not speak


def test_a_verdict_said_again_after_a_crash_carries_the_evidence_it_was_decided_on() -> None:
    join = InProcessJoin()
    cert = cert_no()
    [lid] = _at(join, 1, 1)
    join.publish_certificate(status_change(cert))
    join.publish_listing(listing_event(lid, [cert]))
    join.run_sync()
    [first] = join.verdicts
    (evidence,) = first.evidence
    assert evidence.view is not None and evidence.view.version == 1
    assert evidence.as_record()["known"] is True and evidence.reasons == ()
    assert first.rules_version == f"{RULES_VERSION};model=WARN"

    # Version 2 changes only the category the rules read; nobody is taken down (the listing
    # names none), but the listing's view moves on. Then the event is read again.
    join.commit()
    join.publish_certificate(status_change(cert, version=2, category=None))
    join.run_sync()
    join.topics["events"].committed[1] = 0
    join.crash()
    join.run_sync()
    [again] = [v for v in join.verdicts[1:] if v.verdict_id == first.verdict_id]
    assert again.as_record() == {**first.as_record(), "decided_at": again.decided_at}
    assert again.evidence == first.evidence  # version 1, as first decided
