"""The verification rules: pure functions, no I/O, no clock.

Every decision takes its time as an argument (the trigger's own time), so replaying the same
input decides the same way.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from streams.clock import DAY_MS
from streams.model import (
    CertEvidence,
    CertificateStatus,
    CertView,
    VerdictAction,
    VerdictReason,
    VerdictWarning,
)

# What the rules decide, as a version: raise it with every change to a decision, so a verdict
# from before the change can be told apart (each verdict's rules_version starts with it).
RULES_VERSION = "2"

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

# The separators lists of models use: comma, ideographic comma (U+3001), slash, semicolon.
# Matched after NFKC, which folds their full-width and half-width forms into these.
_MODEL_SEPARATORS = re.compile("[,\u3001/;]")

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


class ModelPolicy(StrEnum):
    """What a listing model no claimed certificate covers does to the verdict."""

    BLOCK = "BLOCK"  # it fails: MODEL_MISMATCH is a reason
    WARN = "WARN"  # it passes if all else does: MODEL_MISMATCH rides on it as a warning


@dataclass(frozen=True, slots=True)
class Rules:
    """The rule choices a deployment makes, per platform where a platform may choose."""

    model_mismatch: ModelPolicy = ModelPolicy.WARN
    model_mismatch_by_platform: Mapping[str, ModelPolicy] = field(default_factory=dict)

    def model_policy(self, platform: str) -> ModelPolicy:
        return self.model_mismatch_by_platform.get(platform, self.model_mismatch)


DEFAULT_RULES = Rules()


def rules_version(policy: ModelPolicy) -> str:
    """The id of the rules a decision was taken under: the rules' version and the choices that
    decided it, e.g. ``2;model=WARN``."""
    return f"{RULES_VERSION};model={policy}"


@functools.lru_cache(maxsize=65_536)
def model_keys(text: str) -> tuple[str, ...]:
    """The models a model string names, each normalised, sorted and unique.

    Normalised the way a person reading the certificate would compare: full-width forms as
    half-width (NFKC), case folded, surrounding spaces dropped and inner runs of spaces made
    one; a string listing several models (``"KX-100、KX-200"``) names each. Never fuzzy: two
    models match only when their normalised forms are equal, so every decision can be
    explained.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return tuple(
        sorted({key for part in _MODEL_SEPARATORS.split(folded) if (key := " ".join(part.split()))})
    )


def certificate_model_keys(models: Iterable[str]) -> tuple[str, ...]:
    """Every model a certificate's ``models`` list covers, normalised (see ``model_keys``)."""
    return tuple(sorted({key for entry in models for key in model_keys(entry)}))


@dataclass(frozen=True, slots=True)
class Evaluation:
    reasons: tuple[VerdictReason, ...]
    failing_certs: tuple[str, ...]
    warnings: tuple[VerdictWarning, ...] = ()
    evidence: tuple[CertEvidence, ...] = ()
    rules_version: str = ""

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
    listing_model: str | None = None,
    model_policy: ModelPolicy = ModelPolicy.WARN,
) -> Evaluation:
    """Decide a listing: it passes when it claims at least one certificate and every one is
    well-formed, known, VALID, unexpired at ``at_ms`` and agrees on the category, and (under
    ``ModelPolicy.BLOCK``) its model is covered.

    The model rule: every model the listing names must be one a claimed certificate lists.
    It is checked only when the listing names a model and a claimed certificate lists models;
    a listing of a bundle (a device and its charger) is covered when either certificate lists
    the model. A miss fails every certificate that lists models, or warns under WARN.

    A claimed certificate missing from ``views`` counts as not found. All failing reasons are
    reported, in the contract's enum order; failing certificates in claim order; the evidence
    holds what was seen of each claimed certificate, in claim order.
    """
    version = rules_version(model_policy)
    if not claimed:
        return Evaluation((VerdictReason.NO_CERTIFICATE,), (), rules_version=version)
    per_cert = {
        cert_no: certificate_reasons(cert_no, views.get(cert_no), listing_category, at_ms)
        for cert_no in claimed
    }
    known = {c: v for c in claimed if is_well_formed_cert_no(c) and (v := views.get(c))}
    listing_models = model_keys(listing_model) if listing_model else ()
    listed = {c: set(v.models) for c, v in known.items() if v.models}
    matched: dict[str, tuple[str, ...]] = {}
    mismatch = False
    if listing_models and listed:
        matched = {c: tuple(m for m in listing_models if m in ms) for c, ms in listed.items()}
        mismatch = any(all(m not in ms for ms in listed.values()) for m in listing_models)
    blocks = mismatch and model_policy is ModelPolicy.BLOCK
    warns = mismatch and not blocks
    if blocks:
        for cert_no in listed:
            per_cert[cert_no].add(VerdictReason.MODEL_MISMATCH)
    reasons = set().union(*per_cert.values())
    evidence = tuple(
        CertEvidence(
            cert_no,
            known.get(cert_no),
            _in_order(per_cert[cert_no]),
            (VerdictWarning.MODEL_MISMATCH,) if warns and cert_no in listed else (),
            matched.get(cert_no),
        )
        for cert_no in claimed
    )
    return Evaluation(
        _in_order(reasons),
        tuple(c for c in claimed if per_cert[c]),
        (VerdictWarning.MODEL_MISMATCH,) if warns else (),
        evidence,
        version,
    )


def _in_order(reasons: set[VerdictReason]) -> tuple[VerdictReason, ...]:
    return tuple(sorted(reasons, key=_REASON_ORDER.__getitem__))


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
