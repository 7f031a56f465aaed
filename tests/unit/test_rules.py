"""The verification rules, one behaviour per test; microseconds each, no broker."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from streams.model import CertificateStatus, CertView, VerdictAction, VerdictReason
from streams.rules import (
    embedded_category,
    evaluate,
    is_expired,
    is_well_formed_cert_no,
    recheck_action,
    validity_end_ms,
    verdict_id,
)

CHARGER = "2017010907948411"  # category 0907, chargers
CST = timezone(timedelta(hours=8))
EPOCH = date(1970, 1, 1)


def days(d: date) -> int:
    return (d - EPOCH).days


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


NOW = ms(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
FAR = days(date(2030, 1, 1))


def view(status: CertificateStatus = CertificateStatus.VALID, **kw: object) -> CertView:
    fields: dict[str, object] = {"version": 1, "category_code": "0907", "expires_on": FAR}
    fields.update(kw)
    return CertView(status, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "number",
    [
        "2017010902948411",
        "2016010903878416",
        "2022011606454871",
        "2016010706840003",
        "2019010713148672",
        "2022221101000119(B0)",
    ],
)
def test_real_certificate_numbers_are_well_formed(number: str) -> None:
    assert is_well_formed_cert_no(number)


@pytest.mark.parametrize(
    "number",
    [
        "",
        "201701090294841",  # 15 digits
        "20170109029484110",  # 17 digits
        "2O17010902948411",  # letter O for zero
        "2017010902948I11",  # letter I for one
        "2017 010902948411",
        "2017-0109-02948411",
        "1999010902948411",  # before CCC began
        "201701090294841\u0661",  # an Arabic-Indic digit
        "".join(chr(0xFF10 + int(d)) for d in "2017010902948411"),  # full-width digits
        "2022221101000119(b0)",
        "2022221101000119()",
        "2017010902948411\n",
        "201701090294",  # a 12-character "early" number
    ],
)
def test_malformed_numbers_are_not_repaired(number: str) -> None:
    assert not is_well_formed_cert_no(number)


def test_category_is_digits_7_to_10() -> None:
    assert embedded_category("2022011606454871") == "1606"
    assert embedded_category("2022221101000119(B0)") == "1101"
    assert embedded_category("garbage") is None


def test_valid_through_the_whole_expiry_day_in_china_standard_time() -> None:
    expires_on = days(date(2026, 11, 23))
    last_instant = ms(datetime(2026, 11, 23, 23, 59, 59, 999000, tzinfo=CST))
    assert not is_expired(expires_on, last_instant)
    assert is_expired(expires_on, last_instant + 1)
    assert validity_end_ms(expires_on) == ms(datetime(2026, 11, 23, 16, 0, tzinfo=UTC))


def test_valid_certificate_passes() -> None:
    result = evaluate([CHARGER], "0907", {CHARGER: view()}, NOW)
    assert result.passes
    assert result.reasons == () and result.failing_certs == ()


def test_no_certificate() -> None:
    result = evaluate([], "0907", {}, NOW)
    assert result.reasons == (VerdictReason.NO_CERTIFICATE,)


def test_malformed_number() -> None:
    result = evaluate(["2O17010907948411"], None, {}, NOW)
    assert result.reasons == (VerdictReason.INVALID_CERTIFICATE_NUMBER,)
    assert result.failing_certs == ("2O17010907948411",)


def test_unknown_certificate() -> None:
    assert evaluate([CHARGER], None, {CHARGER: None}, NOW).reasons == (
        VerdictReason.CERTIFICATE_NOT_FOUND,
    )
    assert evaluate([CHARGER], None, {}, NOW).reasons == (VerdictReason.CERTIFICATE_NOT_FOUND,)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (CertificateStatus.SUSPENDED, VerdictReason.CERTIFICATE_SUSPENDED),
        (CertificateStatus.REVOKED, VerdictReason.CERTIFICATE_REVOKED),
        (CertificateStatus.CANCELLED, VerdictReason.CERTIFICATE_CANCELLED),
        (CertificateStatus.EXPIRED, VerdictReason.CERTIFICATE_EXPIRED),
    ],
)
def test_each_invalid_status_has_its_reason(
    status: CertificateStatus, reason: VerdictReason
) -> None:
    assert evaluate([CHARGER], "0907", {CHARGER: view(status)}, NOW).reasons == (reason,)


def test_valid_status_past_its_date_is_expired() -> None:
    expired = view(expires_on=days(date(2026, 11, 22)))
    assert evaluate([CHARGER], "0907", {CHARGER: expired}, NOW).reasons == (
        VerdictReason.CERTIFICATE_EXPIRED,
    )


def test_category_mismatch_only_when_both_sides_give_one() -> None:
    assert evaluate([CHARGER], "0713", {CHARGER: view()}, NOW).reasons == (
        VerdictReason.CATEGORY_MISMATCH,
    )
    assert evaluate([CHARGER], None, {CHARGER: view()}, NOW).passes


def test_certificate_without_category_falls_back_to_its_number() -> None:
    no_category = view(category_code=None)
    assert evaluate([CHARGER], "0907", {CHARGER: no_category}, NOW).passes
    assert evaluate([CHARGER], "0713", {CHARGER: no_category}, NOW).reasons == (
        VerdictReason.CATEGORY_MISMATCH,
    )


def test_every_reason_is_reported_in_contract_order() -> None:
    other = "2016010907878416"
    result = evaluate(
        ["bad", CHARGER, other, "2019010907148672"],
        "0713",
        {
            CHARGER: view(CertificateStatus.SUSPENDED, expires_on=days(date(2020, 1, 1))),
            other: view(CertificateStatus.REVOKED),
        },
        NOW,
    )
    assert result.reasons == (
        VerdictReason.INVALID_CERTIFICATE_NUMBER,
        VerdictReason.CERTIFICATE_NOT_FOUND,
        VerdictReason.CERTIFICATE_SUSPENDED,
        VerdictReason.CERTIFICATE_REVOKED,
        VerdictReason.CERTIFICATE_EXPIRED,
        VerdictReason.CATEGORY_MISMATCH,
    )
    assert result.failing_certs == ("bad", CHARGER, other, "2019010907148672")


def test_one_bad_certificate_among_good_ones_fails_the_listing() -> None:
    good, bad = CHARGER, "2016010907878416"
    result = evaluate(
        [good, bad], "0907", {good: view(), bad: view(CertificateStatus.REVOKED)}, NOW
    )
    assert result.failing_certs == (bad,)
    assert not result.passes


def test_recheck_actions() -> None:
    passing = evaluate([CHARGER], None, {CHARGER: view()}, NOW)
    failing = evaluate([CHARGER], None, {CHARGER: view(CertificateStatus.REVOKED)}, NOW)
    assert recheck_action(True, failing) is VerdictAction.TAKEDOWN
    assert recheck_action(False, passing) is VerdictAction.RESTORE
    assert recheck_action(True, passing) is None
    assert recheck_action(False, failing) is None


def test_verdict_id_is_deterministic_and_distinguishes_its_inputs() -> None:
    first = verdict_id("L1", "E1", VerdictAction.ALLOW)
    assert first == verdict_id("L1", "E1", VerdictAction.ALLOW)
    assert (
        len(
            {
                first,
                verdict_id("L1", "E1", VerdictAction.BLOCK),
                verdict_id("L2", "E1", VerdictAction.ALLOW),
                verdict_id("L1", "E2", VerdictAction.ALLOW),
            }
        )
        == 4
    )
