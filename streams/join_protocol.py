"""Codec of the two internal topics of the foreign-key join: its private protocol.

These messages never leave ccc-guard, so they are compact JSON arrays (orjson), not Avro: the
first element tags the kind. A message this codec cannot read means a bug or a foreign writer on
our internal topic; it raises ``MalformedBodyError`` and is dead-lettered like any input.

Routing is by partition number, never by re-hashing a key someone else partitioned: a listing's
state lives on whatever partition the platform's producer chose for its events, so a
subscription names that partition, the claim index keeps it, and every answer and re-check is
sent to exactly that partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import MalformedBodyError
from streams.model import CertificateStatus, CertView, VerdictTrigger


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Listing ``listing_id``, whose state lives on listing partition ``partition``, now claims
    the certificate (the message key). ``token`` names this subscription; its answer carries it
    back, so an answer to an older subscription, read again after a crash, is not taken for
    this one's."""

    listing_id: str
    partition: int
    token: str = ""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    listing_id: str


@dataclass(frozen=True, slots=True)
class Expire:
    """The sweep found the certificate past its validity at ``at_ms``."""

    at_ms: int


CertificateCommand = Subscribe | Unsubscribe | Expire


@dataclass(frozen=True, slots=True)
class Answer:
    """Reply to a subscription: the certificate's view, or None when it is unknown."""

    cert_no: str
    view: CertView | None
    token: str = ""


@dataclass(frozen=True, slots=True)
class Recheck:
    cert_no: str
    view: CertView
    trigger: VerdictTrigger
    trigger_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class RecheckMany:
    """One re-check for many listings, all on the listing partition the record is sent to: a
    fan-out sends one record per few hundred listings instead of one each."""

    cert_no: str
    view: CertView
    trigger: VerdictTrigger
    trigger_id: str
    at_ms: int
    listing_ids: tuple[str, ...]


ListingUpdate = Answer | Recheck | RecheckMany


def view_to_json(view: CertView) -> list[Any]:
    return [str(view.status), view.version, view.category_code, view.expires_on]


def view_from_json(data: Any) -> CertView:
    status, version, category, expires_on = data
    if not (isinstance(version, int) and isinstance(expires_on, int)):
        raise ValueError("view version and expires_on must be integers")
    if category is not None and not isinstance(category, str):
        raise ValueError("view category must be a string or null")
    return CertView(CertificateStatus(status), version, category, expires_on)


def encode_command(command: CertificateCommand) -> bytes:
    match command:
        case Subscribe(listing_id, partition, token):
            return orjson.dumps(["S", listing_id, partition, token])
        case Unsubscribe(listing_id):
            return orjson.dumps(["U", listing_id])
        case Expire(at_ms):
            return orjson.dumps(["E", at_ms])


def decode_command(data: bytes) -> CertificateCommand:
    try:
        match orjson.loads(data):
            case ["S", str(listing_id), int(partition), str(token)] if (
                listing_id and not isinstance(partition, bool) and partition >= 0
            ):
                return Subscribe(listing_id, partition, token)
            case ["U", str(listing_id)] if listing_id:
                return Unsubscribe(listing_id)
            case ["E", int(at_ms)] if not isinstance(at_ms, bool):
                return Expire(at_ms)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise MalformedBodyError(f"unreadable certificate command: {exc}") from None
    raise MalformedBodyError(f"unknown certificate command: {data[:80]!r}")


def encode_update(update: ListingUpdate) -> bytes:
    match update:
        case Answer(cert_no, view, token):
            view_json = None if view is None else view_to_json(view)
            return orjson.dumps(["A", cert_no, view_json, token])
        case Recheck(cert_no, view, trigger, trigger_id, at_ms):
            return orjson.dumps(["R", cert_no, view_to_json(view), str(trigger), trigger_id, at_ms])
        case RecheckMany(cert_no, view, trigger, trigger_id, at_ms, listing_ids):
            view_json = view_to_json(view)
            return orjson.dumps(
                ["M", cert_no, view_json, str(trigger), trigger_id, at_ms, listing_ids]
            )


def decode_update(data: bytes) -> ListingUpdate:
    try:
        match orjson.loads(data):
            case ["A", str(cert_no), None, str(token)]:
                return Answer(cert_no, None, token)
            case ["A", str(cert_no), list(view), str(token)]:
                return Answer(cert_no, view_from_json(view), token)
            case ["R", str(cert_no), list(view), str(trigger), str(trigger_id), int(at_ms)]:
                return Recheck(
                    cert_no, view_from_json(view), VerdictTrigger(trigger), trigger_id, at_ms
                )
            case [
                "M",
                str(cert_no),
                list(view),
                str(trigger),
                str(trigger_id),
                int(at_ms),
                list(ids),
            ]:
                if not ids or not all(isinstance(i, str) and i for i in ids):
                    raise ValueError("a re-check batch needs non-empty listing ids")
                return RecheckMany(
                    cert_no,
                    view_from_json(view),
                    VerdictTrigger(trigger),
                    trigger_id,
                    at_ms,
                    tuple(ids),
                )
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise MalformedBodyError(f"unreadable listing update: {exc}") from None
    raise MalformedBodyError(f"unknown listing update: {data[:80]!r}")
