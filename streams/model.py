"""The domain vocabulary: enums and the immutable records that flow between decode, rules and
state. Symbol names equal the Avro enum symbols of the wire contract (``avro/``), so a value
crosses the wire with ``str(member)`` and comes back with ``Enum(symbol)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ListingEventType(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELISTED = "DELISTED"


class CertificateStatus(StrEnum):
    VALID = "VALID"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class VerdictAction(StrEnum):
    ALLOW = "ALLOW"
    BLOCK = "BLOCK"
    TAKEDOWN = "TAKEDOWN"
    RESTORE = "RESTORE"


class VerdictReason(StrEnum):
    """Declared in the contract's order; verdicts list reasons in this order."""

    NO_CERTIFICATE = "NO_CERTIFICATE"
    INVALID_CERTIFICATE_NUMBER = "INVALID_CERTIFICATE_NUMBER"
    CERTIFICATE_NOT_FOUND = "CERTIFICATE_NOT_FOUND"
    CERTIFICATE_SUSPENDED = "CERTIFICATE_SUSPENDED"
    CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
    CERTIFICATE_CANCELLED = "CERTIFICATE_CANCELLED"
    CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
    CATEGORY_MISMATCH = "CATEGORY_MISMATCH"


class VerdictTrigger(StrEnum):
    LISTING_EVENT = "LISTING_EVENT"
    CERTIFICATE_CHANGE = "CERTIFICATE_CHANGE"
    CERTIFICATE_EXPIRY = "CERTIFICATE_EXPIRY"


@dataclass(frozen=True, slots=True)
class ListingEvent:
    """A validated ``ccc.guard.ListingEvent``; ``cert_numbers`` de-duplicated, in claim order."""

    event_id: str
    event_type: ListingEventType
    platform: str
    listing_id: str
    shop_id: str
    category_code: str | None
    cert_numbers: tuple[str, ...]
    occurred_at: int


@dataclass(frozen=True, slots=True)
class CertView:
    """What the listing side needs to know of a certificate: the part of its record the rules
    read. Listings hold one per claimed certificate, refreshed by every re-check."""

    status: CertificateStatus
    version: int
    category_code: str | None
    expires_on: int  # days since 1970-01-01, the last day of validity (China Standard Time)


@dataclass(frozen=True, slots=True)
class CertTrigger:
    """Why every listing claiming ``cert_no`` is re-checked: the certificate changed (or
    expired) to ``view``, decided at ``at_ms``. The certificate side's fan-out, the internal
    re-check message and the listing side's re-check all carry this one value."""

    cert_no: str
    view: CertView
    trigger: VerdictTrigger
    trigger_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class CertificateChange:
    """A validated ``ccc.guard.CertificateStatusChanged``; ``record`` keeps every field as
    decoded so compliance staff can see what the authority said."""

    cert_no: str
    view: CertView
    changed_at: int
    record: dict[str, object]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One ``ccc.guard.ListingVerdict``, decided; ``as_record`` gives the Avro record."""

    verdict_id: str
    listing_id: str
    platform: str
    shop_id: str
    action: VerdictAction
    reasons: tuple[VerdictReason, ...]
    cert_numbers: tuple[str, ...]
    failing_certs: tuple[str, ...]
    trigger: VerdictTrigger
    trigger_id: str
    event_time: int
    decided_at: int

    def as_record(self) -> dict[str, object]:
        return {
            "verdict_id": self.verdict_id,
            "listing_id": self.listing_id,
            "platform": self.platform,
            "shop_id": self.shop_id,
            "action": str(self.action),
            "reasons": [str(r) for r in self.reasons],
            "cert_numbers": list(self.cert_numbers),
            "failing_certs": list(self.failing_certs),
            "trigger": str(self.trigger),
            "trigger_id": self.trigger_id,
            "event_time": self.event_time,
            "decided_at": self.decided_at,
        }

    @classmethod
    def from_record(cls, record: dict[str, object]) -> Verdict:
        def strings(name: str) -> tuple[str, ...]:
            value = record[name]
            assert isinstance(value, list)
            return tuple(str(v) for v in value)

        return cls(
            verdict_id=str(record["verdict_id"]),
            listing_id=str(record["listing_id"]),
            platform=str(record["platform"]),
            shop_id=str(record["shop_id"]),
            action=VerdictAction(str(record["action"])),
            reasons=tuple(VerdictReason(r) for r in strings("reasons")),
            cert_numbers=strings("cert_numbers"),
            failing_certs=strings("failing_certs"),
            trigger=VerdictTrigger(str(record["trigger"])),
            trigger_id=str(record["trigger_id"]),
            event_time=int(str(record["event_time"])),
            decided_at=int(str(record["decided_at"])),
        )
