"""The listing side's handlers: listing events and the certificate side's updates in, state and
verdicts and certificate commands out. Each takes an explicit ``Record`` and works on the
tables of the partition the record was read on.

Per listing partition, three tables:
- listings: listing_id → the listing's state (``listing_side.ListingState``);
- listing-claims: cert_no NUL listing_id → which listings of this partition need a certificate;
- certificate-watches: cert_no NUL partition → this partition's view of a certificate
  (``watches.CertWatch``), shared by all those listings.

A listing claiming a certificate its partition already watches is decided at once: one input
record, one state write, one verdict. Only the first claimer of a certificate on a partition
subscribes and waits for the answer; the answer then decides every claimer waiting for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from streams import listing_side, validation
from streams.join_protocol import (
    Answer,
    CertificateCommand,
    Reask,
    Subscribe,
    Unsubscribe,
    decode_update,
)
from streams.listing_side import ListingState, Outcome, needed
from streams.metrics import GuardMetrics
from streams.model import CertTrigger, Verdict, VerdictTrigger
from streams.processing import PrefixScan, Record, Table
from streams.reask import AwaitingTracker
from streams.rules import DEFAULT_RULES, Rules, change_trigger_id
from streams.state_codec import (
    cert_partition_key,
    decode_listing,
    decode_watch,
    encode_listing,
    encode_watch,
)
from streams.watches import Answered, CertWatch, late_expiry, on_answer, on_trigger
from topics.codecs import AvroCodec

# Faust's in-memory store drops keys whose recovered value is falsy, so never store b"".
_CLAIMED = b"1"

SendVerdict = Callable[[bytes, Verdict], Awaitable[None]]
SendCommand = Callable[[str, CertificateCommand], Awaitable[None]]
Clock = Callable[[], int]
watch_key = cert_partition_key


def claim_prefix(cert_no: str, partition: int) -> bytes:
    """All claims of a certificate on one listing partition. The partition is in the key, as in
    a watch's: Faust's in-memory store keeps every partition of a worker in one map, and a
    scan that met another partition's claimers would settle them on the wrong partition."""
    return cert_partition_key(cert_no, partition) + b"\x00"


def claim_key(cert_no: str, partition: int, listing_id: str) -> bytes:
    return claim_prefix(cert_no, partition) + listing_id.encode()


@dataclass(frozen=True, slots=True)
class ListingTables:
    listings: Table
    claims: Table
    watches: Table
    scan: PrefixScan


@dataclass(frozen=True, slots=True)
class ListingOutputs:
    verdict: SendVerdict  # keyed by listing_id
    command: SendCommand  # to the certificate's own partition


def _as_change(answer: Answer) -> CertTrigger | None:
    """The answer's view as the re-check of the change that made it: the same trigger id, and
    so the same verdict ids, as the certificate side's own fan-out of that change."""
    if answer.view is None:
        return None
    trigger_id = change_trigger_id(answer.cert_no, answer.view.version)
    return CertTrigger(
        answer.cert_no,
        answer.view,
        VerdictTrigger.CERTIFICATE_CHANGE,
        trigger_id,
        answer.changed_at,
    )


def _behind(state: ListingState, change: CertTrigger) -> bool:
    held = state.views.get(change.cert_no)
    return held is None or held.version < change.view.version


class ListingProcessor:
    def __init__(
        self,
        tables: ListingTables,
        outputs: ListingOutputs,
        codec: AvroCodec,
        event_record: str,
        limits: validation.Limits,
        metrics: GuardMetrics,
        awaiting: AwaitingTracker,
        progress: Counter[str],
        clock: Clock,
        rules: Rules = DEFAULT_RULES,
    ) -> None:
        self.tables, self.outputs, self.codec, self.event_record = (
            tables,
            outputs,
            codec,
            event_record,
        )
        self.limits, self.metrics, self.awaiting = limits, metrics, awaiting
        self.progress, self.clock, self.rules = progress, clock, rules

    # -- inputs ------------------------------------------------------------------------------

    async def on_listing_event(self, record: Record) -> None:
        decoded = self.codec.decode(self.event_record, record.value)
        event = validation.listing_event(decoded, record.key, self.limits)
        self.progress["listing_events"] += 1
        self.metrics.listing_events.labels(str(event.event_type)).inc()
        key = event.listing_id.encode()
        state = self._state(key)
        before = needed(state)
        outcome = listing_side.on_listing_event(
            state, event, self.clock(), record.offset, record.partition, self.rules
        )
        await self._settle(record.partition, event.listing_id, before, outcome)

    async def on_update(self, record: Record) -> None:
        match decode_update(record.value):
            case Answer() as answer:
                await self._on_answer(record.partition, record.offset, answer)
            case CertTrigger() as trigger:
                await self._on_trigger(record.partition, trigger)
            case Reask(listing_id):
                await self._on_reask(record.partition, listing_id)

    async def _on_answer(self, partition: int, offset: int, answer: Answer) -> None:
        key = watch_key(answer.cert_no, partition)
        watch = self._watch(key)
        answered = (
            Answered.STALE if watch is None else on_answer(watch, answer.token, answer.view, offset)
        )
        if watch is None or answered is Answered.STALE:
            self.progress["stale_answers"] += 1
            return
        self.tables.watches[key] = encode_watch(watch)
        catch_up = _as_change(answer)
        # The certificate side follows a late expiry with its own re-check: not applied here.
        for listing_id, state in self._claimers(partition, answer.cert_no):
            before = needed(state)
            if answer.cert_no in state.awaiting:
                outcome = listing_side.on_certificate_answer(
                    state, listing_id, answer.cert_no, watch.view, self.clock(), rules=self.rules
                )
            elif catch_up is not None and _behind(state, catch_up):
                # A change this listing never heard of: its partition was not subscribed when
                # the certificate side fanned it out (a watch closed and opened again around it).
                outcome = listing_side.on_recheck(
                    state, listing_id, catch_up, self.clock(), self.rules
                )
            elif answered is Answered.REPEAT:
                continue  # a re-ask's answer: nothing new for a listing not waiting on it
            else:
                outcome = listing_side.on_certificate_answer(
                    state, listing_id, answer.cert_no, watch.view, self.clock(), rules=self.rules
                )
            await self._settle(partition, listing_id, before, outcome)

    async def _on_reask(self, partition: int, listing_id: str) -> None:
        """Ask again for every answer the listing awaits, after repairing what a lost write
        may have left out: every claim index entry it needs is written again, a watch it
        lacks is opened, and one not answered yet subscribes again with its token."""
        state = self._state(listing_id.encode())
        if state is None or not state.awaiting:
            return
        outcome = listing_side.reask(state)
        await self._settle(partition, listing_id, set(), outcome)

    async def _on_trigger(self, partition: int, trigger: CertTrigger) -> None:
        key = watch_key(trigger.cert_no, partition)
        watch = self._watch(key)
        if watch is None:
            return  # no listing of this partition claims it any more
        on_trigger(watch, trigger)
        self.tables.watches[key] = encode_watch(watch)
        started, rechecked = self.clock(), 0
        for listing_id, state in self._claimers(partition, trigger.cert_no):
            before = needed(state)
            outcome = listing_side.on_recheck(state, listing_id, trigger, self.clock(), self.rules)
            await self._settle(partition, listing_id, before, outcome)
            rechecked += 1
        self.progress["rechecks"] += rechecked
        self.metrics.fanout_listings.labels(str(trigger.trigger)).observe(rechecked)
        self.metrics.fanout_seconds.labels(str(trigger.trigger)).observe(
            (self.clock() - started) / 1000
        )

    # -- state -------------------------------------------------------------------------------

    async def _settle(
        self, partition: int, listing_id: str, before: set[str], outcome: Outcome
    ) -> None:
        """Write what ``outcome`` says, after deciding at once what the partition's watches
        can decide: a certificate awaited that is watched and answered here needs no round
        trip. Then the claims index follows what the listing needs, watches open for the
        first claimer and close after the last, and the verdicts go out."""
        state, verdicts, changed = outcome.state, list(outcome.verdicts), outcome.changed
        if state is not None:
            for cert_no in sorted(state.awaiting):
                answered = await self._watched(partition, listing_id, state, cert_no, outcome)
                if answered is not None:
                    state, changed = answered.state, True
                    verdicts.extend(answered.verdicts)
                    if state is None:
                        break
        after = needed(state)
        for cert_no in sorted(after - before):
            self.tables.claims[claim_key(cert_no, partition, listing_id)] = _CLAIMED
        for cert_no in sorted(before - after):
            self.tables.claims.pop(claim_key(cert_no, partition, listing_id), None)
            await self._close_if_unclaimed(partition, cert_no)
        key = listing_id.encode()
        if changed:
            if state is None:
                self.tables.listings.pop(key, None)
            else:
                self.tables.listings[key] = encode_listing(state)
            self.awaiting.track(key, state is not None and bool(state.awaiting))
        for verdict in verdicts:
            self.progress[f"verdicts_{verdict.action.lower()}"] += 1
            await self.outputs.verdict(key, verdict)
            self.metrics.verdict(verdict, self.clock())

    async def _watched(
        self, partition: int, listing_id: str, state: ListingState, cert_no: str, asked: Outcome
    ) -> Outcome | None:
        """The listing awaits ``cert_no``: the outcome of answering it from the partition's
        watch, if that is answered; else None, after opening the watch (subscribing) if there
        is none, or asking again if the outcome asks again (a replayed event)."""
        key = watch_key(cert_no, partition)
        watch = self._watch(key)
        if watch is None:
            watch = CertWatch(state.awaiting[cert_no])
            self.tables.watches[key] = encode_watch(watch)
            await self.outputs.command(cert_no, Subscribe(partition, watch.token))
            return None
        if not watch.answered:
            if (
                asked.asks_again
                and cert_no in asked.subscribe
                and self.awaiting.resubscribe_due(key)
            ):
                await self.outputs.command(cert_no, Subscribe(partition, watch.token))
            return None
        outcome = listing_side.on_certificate_answer(
            state, listing_id, cert_no, watch.view, self.clock(), rules=self.rules
        )
        return self._with_late_expiry(outcome, listing_id, watch)

    def _with_late_expiry(self, outcome: Outcome, listing_id: str, watch: CertWatch) -> Outcome:
        late = late_expiry(watch)
        if late is None or outcome.state is None:
            return outcome
        rechecked = listing_side.on_recheck(
            outcome.state, listing_id, late, self.clock(), self.rules
        )
        return Outcome(
            rechecked.state,
            [*outcome.verdicts, *rechecked.verdicts],
            changed=outcome.changed or rechecked.changed,
        )

    async def _close_if_unclaimed(self, partition: int, cert_no: str) -> None:
        claims = self.tables.scan(self.tables.claims, partition, claim_prefix(cert_no, partition))
        if next(claims, None) is not None:
            return
        key = watch_key(cert_no, partition)
        watch = self._watch(key)
        if watch is not None:
            self.tables.watches.pop(key, None)
            await self.outputs.command(cert_no, Unsubscribe(partition, watch.token))

    def _claimers(self, partition: int, cert_no: str) -> Iterator[tuple[str, ListingState]]:
        """The listings of ``partition`` that need ``cert_no``, with their state, read as they
        come (the scan is safe to write behind)."""
        prefix = claim_prefix(cert_no, partition)
        for key, _ in self.tables.scan(self.tables.claims, partition, prefix):
            listing_id = key[len(prefix) :].decode()
            state = self._state(listing_id.encode())
            if state is not None:
                yield listing_id, state

    def _state(self, key: bytes) -> ListingState | None:
        value = self.tables.listings.get(key)
        return None if value is None else decode_listing(value)

    def _watch(self, key: bytes) -> CertWatch | None:
        value = self.tables.watches.get(key)
        return None if value is None else decode_watch(value)

    # -- the re-ask timer --------------------------------------------------------------------

    def reask_request(self, key: bytes) -> tuple[int, Reask, int] | None:
        """What the re-ask timer sends for a listing that has awaited answers too long: to
        which partition, and how many answers it asks again; None if it awaits nothing."""
        state = self._state(key)
        if state is None or not state.awaiting or state.partition < 0:
            return None
        return state.partition, Reask(key.decode()), len(state.awaiting)
