"""The verification rules: pure functions, no I/O, no clock.

Every decision takes its time as an argument (the trigger's own time), so replaying the same
input decides the same way.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streams.clock import DAY_MS
from streams.model import CertificateStatus, CertView, VerdictAction, VerdictReason

# 16 ASCII digits: year first issued (CCC began in 2002), certification body, product category,
# serial; vehicle certificates add a version suffix such as "(B0)" that is part of the number.
# re.ASCII keeps full-width and other Unicode digits out: a listing must show the real number.
_CERT_NO = re.compile(
    r"(?P<year>20\d\d)(?P<body>\d\d)(?P<category>\d{4})(?P<serial>\d{6})(?:\([A-Z0-9]{1,4}\))?",
    re.ASCII,
)
_FIRST_CCC_YEAR = 2002

# Certificates are valid through the whole of their valid-until day in China Standard Time
# (UTC+8, no daylight saving): validity ends at 00:00 CST of the next day = 16:00 UTC that day.
_CST_OFFSET_MS = 8 * 3_600_000

_STATUS_REASON: Mapping[CertificateStatus, VerdictReason] = {
    CertificateStatus.SUSPENDED: VerdictReason.CERTIFICATE_SUSPENDED,
    CertificateStatus.REVOKED: VerdictReason.CERTIFICATE_REVOKED,
    CertificateStatus.CANCELLED: VerdictReason.CERTIFICATE_CANCELLED,
    CertificateStatus.EXPIRED: VerdictReason.CERTIFICATE_EXPIRED,
}
_REASON_ORDER = {reason: index for index, reason in enumerate(VerdictReason)}

# Any fixed namespace works; it only has to never change, or verdict ids of replays would.
_VERDICT_NAMESPACE = uuid.UUID("6f1c2a0e-3c1b-5e7d-9a55-0c3c3c6e7d01")


def is_well_formed_cert_no(cert_no: str) -> bool:
    match = _CERT_NO.fullmatch(cert_no)
    return match is not None and int(match["year"]) >= _FIRST_CCC_YEAR


def embedded_category(cert_no: str) -> str | None:
    """The 4-digit product category code inside a well-formed number (digits 7-10)."""
    match = _CERT_NO.fullmatch(cert_no)
    return match["category"] if match else None


def validity_end_ms(expires_on: int) -> int:
    """First instant (epoch ms) at which a certificate valid until ``expires_on`` has expired."""
    return (expires_on + 1) * DAY_MS - _CST_OFFSET_MS


def is_expired(expires_on: int, at_ms: int) -> bool:
    return at_ms >= validity_end_ms(expires_on)


@dataclass(frozen=True, slots=True)
class Evaluation:
    reasons: tuple[VerdictReason, ...]
    failing_certs: tuple[str, ...]

    @property
    def passes(self) -> bool:
        return not self.reasons


def certificate_reasons(
    cert_no: str, view: CertView | None, listing_category: str | None, at_ms: int
) -> set[VerdictReason]:
    """Every reason one claimed certificate fails for; empty when it is fine."""
    if not is_well_formed_cert_no(cert_no):
        return {VerdictReason.INVALID_CERTIFICATE_NUMBER}
    if view is None:
        return {VerdictReason.CERTIFICATE_NOT_FOUND}
    reasons: set[VerdictReason] = set()
    status_reason = _STATUS_REASON.get(view.status)
    if status_reason is not None:
        reasons.add(status_reason)
    if is_expired(view.expires_on, at_ms):
        reasons.add(VerdictReason.CERTIFICATE_EXPIRED)
    # The certificate's own category, or failing that the one its number carries.
    cert_category = view.category_code or embedded_category(cert_no)
    if listing_category and cert_category and listing_category != cert_category:
        reasons.add(VerdictReason.CATEGORY_MISMATCH)
    return reasons


def evaluate(
    claimed: Sequence[str],
    listing_category: str | None,
    views: Mapping[str, CertView | None],
    at_ms: int,
) -> Evaluation:
    """Decide a listing: it passes when it claims at least one certificate and every one is
    well-formed, known, VALID, unexpired at ``at_ms`` and agrees on the category.

    A claimed certificate missing from ``views`` counts as not found. All failing reasons are
    reported, in the contract's enum order; failing certificates in claim order.
    """
    if not claimed:
        return Evaluation((VerdictReason.NO_CERTIFICATE,), ())
    reasons: set[VerdictReason] = set()
    failing: list[str] = []
    for cert_no in claimed:
        cert_reasons = certificate_reasons(cert_no, views.get(cert_no), listing_category, at_ms)
        if cert_reasons:
            reasons |= cert_reasons
            failing.append(cert_no)
    return Evaluation(tuple(sorted(reasons, key=_REASON_ORDER.__getitem__)), tuple(failing))


def listing_event_action(evaluation: Evaluation) -> VerdictAction:
    return VerdictAction.ALLOW if evaluation.passes else VerdictAction.BLOCK


def recheck_action(live: bool, evaluation: Evaluation) -> VerdictAction | None:
    """A re-check only speaks when the listing must change state."""
    if live and not evaluation.passes:
        return VerdictAction.TAKEDOWN
    if not live and evaluation.passes:
        return VerdictAction.RESTORE
    return None


def verdict_id(listing_id: str, trigger_id: str, action: VerdictAction) -> str:
    """Deterministic: a replayed decision carries the same id, so consumers can de-duplicate."""
    return str(uuid.uuid5(_VERDICT_NAMESPACE, f"{listing_id}\x1f{trigger_id}\x1f{action}"))


def change_trigger_id(cert_no: str, version: int) -> str:
    return f"{cert_no}@{version}"


def expiry_trigger_id(cert_no: str) -> str:
    return f"{cert_no}@expiry"
