"""From a decoded Avro record to a trusted domain record, or ``InvalidRecordError``.

Avro guarantees types; this guards what Avro cannot: empty ids, absurd sizes, a message key
that disagrees with the record (which would route state to the wrong partition), control
characters in ids. Certificate numbers are *not* repaired here: a malformed number is kept
verbatim and the rules report it as INVALID_CERTIFICATE_NUMBER.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from streams.errors import InvalidRecordError
from streams.model import (
    CertificateChange,
    CertificateStatus,
    CertView,
    ListingEvent,
    ListingEventType,
)
from streams.rules import certificate_model_keys, is_well_formed_cert_no
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Limits:
    max_certs: int
    max_text_chars: int
    max_id_chars: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_certs_per_listing, settings.max_text_chars, settings.max_id_chars)


def _id(record: dict[str, Any], name: str, limits: Limits) -> str:
    value: str = record[name]
    if not value.strip():
        raise InvalidRecordError(f"{name} is empty")
    if len(value) > limits.max_id_chars:
        raise InvalidRecordError(
            f"{name} has {len(value)} characters (limit {limits.max_id_chars})"
        )
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in value):
        raise InvalidRecordError(f"{name} contains control or separator characters: {value!r}")
    return value


def is_acceptable_id(value: str, limits: Limits) -> bool:
    """Whether ``value`` could be a listing id or certificate number of an accepted event:
    what the query API looks up, anything else being unknown by construction."""
    try:
        _id({"id": value}, "id", limits)
    except InvalidRecordError:
        return False
    return True


def _text(record: dict[str, Any], name: str, limits: Limits) -> None:
    value = record.get(name)
    if value is not None and len(value) > limits.max_text_chars:
        raise InvalidRecordError(
            f"{name} has {len(value)} characters (limit {limits.max_text_chars})"
        )


def _check_key(key: bytes | None, expected: str, name: str) -> None:
    if key is None or key != expected.encode():
        raise InvalidRecordError(
            f"message key {key!r} does not equal {name} {expected!r}: "
            f"records must be keyed by {name} so its state lands on the right partition"
        )


def listing_event(record: dict[str, Any], key: bytes | None, limits: Limits) -> ListingEvent:
    event_id = _id(record, "event_id", limits)
    listing_id = _id(record, "listing_id", limits)
    platform = _id(record, "platform", limits)
    shop_id = _id(record, "shop_id", limits)
    _check_key(key, listing_id, "listing_id")
    for name in ("title", "category_code", "brand", "model"):
        _text(record, name, limits)
    certs: list[str] = record["cert_numbers"]
    if len(certs) > limits.max_certs:
        raise InvalidRecordError(
            f"claims {len(certs)} certificate numbers (limit {limits.max_certs})"
        )
    for cert_no in certs:
        if len(cert_no) > limits.max_id_chars:
            raise InvalidRecordError(
                f"a certificate number has {len(cert_no)} characters (limit {limits.max_id_chars})"
            )
    return ListingEvent(
        event_id=event_id,
        event_type=ListingEventType(record["event_type"]),
        platform=platform,
        shop_id=shop_id,
        listing_id=listing_id,
        category_code=record["category_code"] or None,
        model=record["model"] or None,
        cert_numbers=tuple(dict.fromkeys(certs)),  # de-duplicated, claim order kept
        occurred_at=record["occurred_at"],
    )


def certificate_change(
    record: dict[str, Any], key: bytes | None, limits: Limits
) -> CertificateChange:
    cert_no = _id(record, "cert_no", limits)
    _check_key(key, cert_no, "cert_no")
    if not is_well_formed_cert_no(cert_no):
        raise InvalidRecordError(f"cert_no {cert_no!r} is not a well-formed CCC number")
    if record["version"] < 0:
        raise InvalidRecordError(f"version {record['version']} is negative")
    for name in ("holder", "manufacturer", "factory", "product_name", "reason"):
        _text(record, name, limits)
    if len(record["models"]) > limits.max_certs * 20:
        raise InvalidRecordError(f"lists {len(record['models'])} models")
    view = CertView(
        status=CertificateStatus(record["status"]),
        version=record["version"],
        category_code=record["category_code"] or None,
        expires_on=record["expires_on"],
        models=certificate_model_keys(record["models"]),
    )
    return CertificateChange(cert_no, view, record["changed_at"], record)
