"""Table values as bytes: listing state and certificate state, as compact orjson documents;
claim index entries as the listing's partition.

Kept apart from the state machines so those stay plain objects; kept small because every write
of a value goes whole to the table's changelog. Every document carries the format version
(``"fv"``, first): a worker never reads state of another format as if it were its own, it stops
with ``StateFormatError`` (upgrades across formats are stop-all, see the README).
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.certificate_side import CertState
from streams.errors import StateFormatError
from streams.join_protocol import (
    trigger_from_json,
    trigger_to_json,
    view_from_json,
    view_to_json,
)
from streams.listing_side import DecidedEvent, ListingState, PendingCheck
from streams.model import (
    CertEvidence,
    CertView,
    Verdict,
    VerdictAction,
    VerdictReason,
    VerdictWarning,
)
from streams.rules import Evaluation
from streams.watches import CertWatch

# 2: listing partitions in the listing state and the claim index (partition-addressed join).
# 3: decided events keep their event ids; watches the offset of their latest answer.
# 4: views carry the certificate's models, listings their model, decided events the evidence.
FORMAT_VERSION = 4


def load_document(data: bytes, what: str, format_version: int = FORMAT_VERSION) -> dict[str, Any]:
    """A stored JSON document of ``format_version``; ``StateFormatError`` for any other."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateFormatError(f"{what} state is not a JSON document: {exc}") from None
    version = doc.get("fv", "1 (unversioned)") if isinstance(doc, dict) else "unknown"
    if not isinstance(doc, dict) or version != format_version:
        raise StateFormatError(
            f"{what} state is in format {version}, this worker reads format {format_version}: "
            "state of another ccc-guard version (see the README's upgrade section)"
        )
    return doc


def encode_listing(state: ListingState) -> bytes:
    return orjson.dumps(
        {
            "fv": FORMAT_VERSION,
            "p": state.platform,
            "s": state.shop_id,
            "c": state.category,
            "m": state.model,
            "cl": state.claimed,
            "v": {k: None if v is None else view_to_json(v) for k, v in state.views.items()},
            "l": state.live,
            "r": [str(r) for r in state.reasons],
            "f": state.failing,
            "q": [
                [p.event_id, p.occurred_at, p.claimed, p.category, p.late, p.model]
                for p in state.pending
            ],
            "lv": None if state.last_verdict is None else state.last_verdict.as_record(),
            "lk": state.last_key,
            "d": state.delisted,
            "re": state.recent_events,
            "t": state.clock_ms,
            "o": state.event_offset,
            "oa": state.event_at,
            "dv": [_decided_to_json(d) for d in state.decided],
            "pt": state.partition,
            "aw": state.awaiting,
        }
    )


def _decided_to_json(d: DecidedEvent) -> list[object]:
    return [
        d.digest,
        str(d.action),
        _evaluation_to_json(d.evaluation),
        d.claimed,
        d.occurred_at,
        d.decided_at,
        d.event_id,
    ]


def _evaluation_to_json(e: Evaluation) -> list[object]:
    return [
        [str(r) for r in e.reasons],
        e.failing_certs,
        [str(w) for w in e.warnings],
        [
            [
                c.cert_no,
                None if c.view is None else view_to_json(c.view),
                [str(r) for r in c.reasons],
                [str(w) for w in c.warnings],
                c.models_matched,
            ]
            for c in e.evidence
        ],
        e.rules_version,
    ]


def _evaluation_from_json(doc: list[Any]) -> Evaluation:
    reasons, failing, warnings, evidence, version = doc
    return Evaluation(
        tuple(VerdictReason(r) for r in reasons),
        tuple(failing),
        tuple(VerdictWarning(w) for w in warnings),
        tuple(
            CertEvidence(
                cert_no,
                None if view is None else view_from_json(view),
                tuple(VerdictReason(r) for r in cert_reasons),
                tuple(VerdictWarning(w) for w in cert_warnings),
                None if matched is None else tuple(matched),
            )
            for cert_no, view, cert_reasons, cert_warnings, matched in evidence
        ),
        version,
    )


def decode_listing(data: bytes) -> ListingState:
    doc = load_document(data, "listing")
    views: dict[str, CertView | None] = {
        k: None if v is None else view_from_json(v) for k, v in doc["v"].items()
    }
    return ListingState(
        platform=doc["p"],
        shop_id=doc["s"],
        category=doc["c"],
        model=doc["m"],
        claimed=tuple(doc["cl"]),
        views=views,
        live=doc["l"],
        reasons=tuple(VerdictReason(r) for r in doc["r"]),
        failing=tuple(doc["f"]),
        pending=[PendingCheck(q[0], q[1], tuple(q[2]), q[3], q[4], q[5]) for q in doc["q"]],
        last_verdict=None if doc["lv"] is None else Verdict.from_record(doc["lv"]),
        last_key=doc.get("lk"),
        delisted=doc["d"],
        recent_events=tuple(doc.get("re", ())),
        clock_ms=doc.get("t", 0),
        event_offset=doc.get("o", -1),
        event_at=doc.get("oa", 0),
        awaiting=dict(doc.get("aw", {})),
        partition=doc.get("pt", -1),
        decided=[
            DecidedEvent(
                digest,
                VerdictAction(action),
                _evaluation_from_json(evaluation),
                tuple(claimed),
                occurred_at,
                decided_at,
                event_id,
            )
            for digest, action, evaluation, claimed, occurred_at, decided_at, event_id in doc["dv"]
        ],
    )


_NOTHING_AWAITED = b'"aw":{}}'  # "aw" is the last key encode_listing writes


def may_await_answers(data: bytes) -> bool:
    """Whether an encoded listing state may be awaiting certificate answers, without decoding
    it: a scan over every listing after a rebalance stays cheap. False only when it is
    certainly not; a True is confirmed by decoding."""
    return not data.endswith(_NOTHING_AWAITED)


def encode_certificate(state: CertState) -> bytes:
    return orjson.dumps(
        {
            "fv": FORMAT_VERSION,
            "n": state.cert_no,
            "v": view_to_json(state.view),
            "t": state.changed_at,
            "rec": state.record,
            "ft": state.fanout_trigger_id,
            "fd": state.fanout_done,
            "x": state.expiry_swept,
        }
    )


def decode_certificate(data: bytes) -> CertState:
    doc = load_document(data, "certificate")
    swept = doc["x"]
    return CertState(
        cert_no=doc["n"],
        view=view_from_json(doc["v"]),
        changed_at=doc["t"],
        record=doc["rec"],
        fanout_trigger_id=doc["ft"],
        fanout_done=doc["fd"],
        expiry_swept=None if swept is None else (swept[0], swept[1]),
    )


def encode_watch(watch: CertWatch) -> bytes:
    return orjson.dumps(
        {
            "fv": FORMAT_VERSION,
            "tk": watch.token,
            "a": watch.answered,
            "v": None if watch.view is None else view_to_json(watch.view),
            "x": None if watch.expiry is None else trigger_to_json(watch.expiry),
            "ao": watch.answered_offset,
        }
    )


def decode_watch(data: bytes) -> CertWatch:
    doc = load_document(data, "watch")
    return CertWatch(
        token=doc["tk"],
        answered=doc["a"],
        view=None if doc["v"] is None else view_from_json(doc["v"]),
        expiry=None if doc["x"] is None else trigger_from_json(doc["x"]),
        answered_offset=doc.get("ao", -1),
    )


# Table keys. A NUL cannot occur in a certificate number or listing id (validation refuses
# control characters), so it separates the parts unambiguously, and all keys of one certificate
# are adjacent in RocksDB's key order (one prefix seek finds them).
_KEY_SEPARATOR = b"\x00"


def cert_prefix(cert_no: str) -> bytes:
    return cert_no.encode() + _KEY_SEPARATOR


def cert_partition_key(cert_no: str, partition: int) -> bytes:
    """A certificate on one listing partition: a watch, or a subscription. The partition is in
    the key because Faust's in-memory store keeps all partitions in one map."""
    return cert_prefix(cert_no) + b"%d" % partition
