"""The domain vocabulary: enums and the immutable records that flow between decode, rules and
state. Symbol names equal the Avro enum symbols of the wire contract (``avro/``), so a value
crosses the wire with ``str(member)`` and comes back with ``Enum(symbol)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
    # ListingVerdict v2 and later: not in v1's enum, so it appears only in reason_codes.
    MODEL_MISMATCH = "MODEL_MISMATCH"


# The reasons ListingVerdict v1's enum names: the only ones its ``reasons`` field may carry.
V1_REASONS = frozenset(VerdictReason) - {VerdictReason.MODEL_MISMATCH}


class VerdictWarning(StrEnum):
    """What a verdict notes without it changing the action."""

    MODEL_MISMATCH = "MODEL_MISMATCH"


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
    model: str | None = None  # as declared, not normalised


@dataclass(frozen=True, slots=True)
class CertView:
    """What the listing side needs to know of a certificate: the part of its record the rules
    read. Listings hold one per claimed certificate, refreshed by every re-check."""

    status: CertificateStatus
    version: int
    category_code: str | None
    expires_on: int  # days since 1970-01-01, the last day of validity (China Standard Time)
    # The models the certificate covers, normalised (rules.model_keys), sorted: what a
    # listing's model is compared with.
    models: tuple[str, ...] = ()


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
class CertEvidence:
    """What a decision saw of one claimed certificate, and what it found: a verdict carries one
    per claimed certificate, so it proves what it was decided on."""

    cert_no: str
    view: CertView | None  # None: not known (or the number is malformed)
    reasons: tuple[VerdictReason, ...] = ()
    warnings: tuple[VerdictWarning, ...] = ()
    # The listing's models this certificate covers; None when the model was not checked
    # (the listing names no model, or no claimed certificate lists models).
    models_matched: tuple[str, ...] | None = None

    def as_record(self) -> dict[str, object]:
        view = self.view
        return {
            "cert_no": self.cert_no,
            "known": view is not None,
            "status": None if view is None else str(view.status),
            "version": None if view is None else view.version,
            "valid_until": None if view is None else view.expires_on,
            "category_code": None if view is None else view.category_code,
            "models_matched": None if self.models_matched is None else list(self.models_matched),
            "reasons": [str(r) for r in self.reasons],
            "warnings": [str(w) for w in self.warnings],
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """One ``ccc.guard.ListingVerdict``, decided; ``as_record`` gives the Avro record.

    ``reasons`` holds every reason, MODEL_MISMATCH included; on the wire v1's ``reasons``
    field carries those v1 can name and ``reason_codes`` all of them, so a v1 reader still
    reads every verdict."""

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
    warnings: tuple[VerdictWarning, ...] = ()
    evidence: tuple[CertEvidence, ...] = ()
    rules_version: str = ""

    def as_record(self) -> dict[str, object]:
        return {
            "verdict_id": self.verdict_id,
            "listing_id": self.listing_id,
            "platform": self.platform,
            "shop_id": self.shop_id,
            "action": str(self.action),
            "reasons": [str(r) for r in self.reasons if r in V1_REASONS],
            "cert_numbers": list(self.cert_numbers),
            "failing_certs": list(self.failing_certs),
            "trigger": str(self.trigger),
            "trigger_id": self.trigger_id,
            "event_time": self.event_time,
            "decided_at": self.decided_at,
            "reason_codes": [str(r) for r in self.reasons],
            "warnings": [str(w) for w in self.warnings],
            "evidence": [e.as_record() for e in self.evidence],
            "rules_version": self.rules_version,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Verdict:
        """The inverse of ``as_record`` (a v1 record, without reason codes, reads too)."""
        return cls(
            verdict_id=record["verdict_id"],
            listing_id=record["listing_id"],
            platform=record["platform"],
            shop_id=record["shop_id"],
            action=VerdictAction(record["action"]),
            reasons=tuple(VerdictReason(r) for r in record.get("reason_codes", record["reasons"])),
            cert_numbers=tuple(record["cert_numbers"]),
            failing_certs=tuple(record["failing_certs"]),
            trigger=VerdictTrigger(record["trigger"]),
            trigger_id=record["trigger_id"],
            event_time=int(record["event_time"]),
            decided_at=int(record["decided_at"]),
            warnings=tuple(VerdictWarning(w) for w in record.get("warnings", ())),
            evidence=tuple(_evidence_from_record(e) for e in record.get("evidence", ())),
            rules_version=record.get("rules_version", ""),
        )


def _evidence_from_record(record: dict[str, Any]) -> CertEvidence:
    view = None
    if record["known"]:
        view = CertView(
            CertificateStatus(record["status"]),
            record["version"],
            record["category_code"],
            record["valid_until"],
        )
    matched = record["models_matched"]
    return CertEvidence(
        record["cert_no"],
        view,
        tuple(VerdictReason(r) for r in record["reasons"]),
        tuple(VerdictWarning(w) for w in record["warnings"]),
        None if matched is None else tuple(matched),
    )
