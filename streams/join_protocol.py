"""Codec of the two internal topics of the foreign-key join: its private protocol.

These messages never leave ccc-guard, so they are compact JSON arrays (orjson), not Avro: the
first element tags the kind. A message this codec cannot read means a bug or a foreign writer on
our internal topic; it raises ``MalformedBodyError`` and is dead-lettered like any input.

Routing is by partition number, never by re-hashing a key someone else partitioned. A listing
partition *watches* a certificate once, for all its listings that claim it: its subscription
names the partition, the certificate side keeps one subscription per (certificate, partition),
and sends every answer and re-check to exactly that partition. Commands are keyed by cert_no
and sent to the certificate's partition by ccc-guard's own partitioner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import MalformedBodyError
from streams.model import CertificateStatus, CertTrigger, CertView, VerdictTrigger


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Listing partition ``partition`` watches the certificate (the message key). ``token``
    names this watch; its answer carries it back, so an answer to an older watch, read again
    after a crash, is not taken for this one's."""

    partition: int
    token: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Listing partition ``partition`` no longer has listings claiming the certificate; only
    the watch named ``token`` ends (a newer one of the same partition stays)."""

    partition: int
    token: str


@dataclass(frozen=True, slots=True)
class Expire:
    """The sweep found the certificate past its validity at ``at_ms``."""

    at_ms: int


CertificateCommand = Subscribe | Unsubscribe | Expire


@dataclass(frozen=True, slots=True)
class Answer:
    """Reply to a subscription: the certificate's view, or None when it is unknown, and when the
    authority made that change (0 when unknown). A listing that holds an older view than an
    answer (a fan-out its partition missed while it was not subscribed) is re-checked with it
    as that change."""

    cert_no: str
    view: CertView | None
    token: str
    changed_at: int = 0


@dataclass(frozen=True, slots=True)
class Reask:
    """From the listing side's re-ask timer to its own partition: ``listing_id`` has awaited
    certificate answers too long. A timer may not write tables; the agent that reads this may,
    so it repairs the claim index and watches and asks again."""

    listing_id: str


# A CertTrigger re-checks every listing of the receiving partition that claims the certificate.
ListingUpdate = Answer | CertTrigger | Reask


def view_to_json(view: CertView) -> list[Any]:
    return [str(view.status), view.version, view.category_code, view.expires_on, view.models]


def view_from_json(data: Any) -> CertView:
    status, version, category, expires_on, models = data
    if not (isinstance(version, int) and isinstance(expires_on, int)):
        raise ValueError("view version and expires_on must be integers")
    if category is not None and not isinstance(category, str):
        raise ValueError("view category must be a string or null")
    if not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
        raise ValueError("view models must be a list of strings")
    return CertView(CertificateStatus(status), version, category, expires_on, tuple(models))


def trigger_to_json(trigger: CertTrigger) -> list[Any]:
    return [
        trigger.cert_no,
        view_to_json(trigger.view),
        str(trigger.trigger),
        trigger.trigger_id,
        trigger.at_ms,
    ]


def trigger_from_json(data: Any) -> CertTrigger:
    match data:
        case [str(cert_no), list(view), str(trigger), str(trigger_id), int(at_ms)] if (
            not isinstance(at_ms, bool)
        ):
            return CertTrigger(
                cert_no, view_from_json(view), VerdictTrigger(trigger), trigger_id, at_ms
            )
    raise ValueError(f"not a certificate trigger: {data!r:.80}")


def _partition(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _changed_at(rest: list[Any]) -> bool:
    """An answer's optional last element (answers of before it had none)."""
    return rest == [] or (
        len(rest) == 1
        and isinstance(rest[0], int)
        and not isinstance(rest[0], bool)
        and rest[0] >= 0
    )


def encode_command(command: CertificateCommand) -> bytes:
    match command:
        case Subscribe(partition, token):
            return orjson.dumps(["S", partition, token])
        case Unsubscribe(partition, token):
            return orjson.dumps(["U", partition, token])
        case Expire(at_ms):
            return orjson.dumps(["E", at_ms])


def decode_command(data: bytes) -> CertificateCommand:
    try:
        match orjson.loads(data):
            case ["S", partition, str(token)] if _partition(partition) and token:
                return Subscribe(partition, token)
            case ["U", partition, str(token)] if _partition(partition) and token:
                return Unsubscribe(partition, token)
            case ["E", int(at_ms)] if not isinstance(at_ms, bool):
                return Expire(at_ms)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise MalformedBodyError(f"unreadable certificate command: {exc}") from None
    raise MalformedBodyError(f"unknown certificate command: {data[:80]!r}")


def encode_update(update: ListingUpdate) -> bytes:
    match update:
        case Answer(cert_no, view, token, changed_at):
            view_json = None if view is None else view_to_json(view)
            return orjson.dumps(["A", cert_no, view_json, token, changed_at])
        case CertTrigger():
            return orjson.dumps(["R", *trigger_to_json(update)])
        case Reask(listing_id):
            return orjson.dumps(["Q", listing_id])


def decode_update(data: bytes) -> ListingUpdate:
    try:
        match orjson.loads(data):
            case ["A", str(cert_no), None, str(token), *rest] if _changed_at(rest):
                return Answer(cert_no, None, token, *rest)
            case ["A", str(cert_no), list(view), str(token), *rest] if _changed_at(rest):
                return Answer(cert_no, view_from_json(view), token, *rest)
            case ["R", *trigger]:
                return trigger_from_json(trigger)
            case ["Q", str(listing_id)] if listing_id:
                return Reask(listing_id)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise MalformedBodyError(f"unreadable listing update: {exc}") from None
    raise MalformedBodyError(f"unknown listing update: {data[:80]!r}")
