"""The verification rules, one behaviour per test; microseconds each, no broker."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from streams.model import (
    CertificateStatus,
    CertView,
    Verdict,
    VerdictAction,
    VerdictReason,
    VerdictTrigger,
    VerdictWarning,
)
from streams.rules import (
    RULES_VERSION,
    ModelPolicy,
    Rules,
    certificate_model_keys,
    embedded_category,
    evaluate,
    is_expired,
    is_well_formed_cert_no,
    listing_event_action,
    model_keys,
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


# --- the model rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "keys"),
    [
        ("KX-100", ("kx-100",)),
        ("  KX-100  ", ("kx-100",)),
        ("ＫＸ－１００", ("kx-100",)),  # full-width letters, digits and hyphen
        ("kx-100、KX-200", ("kx-100", "kx-200")),  # ideographic comma
        ("KX-100，KX-200", ("kx-100", "kx-200")),  # full-width comma
        ("KX-100, KX-200 ,KX-300", ("kx-100", "kx-200", "kx-300")),
        ("KX-100/KX-200；KX-300", ("kx-100", "kx-200", "kx-300")),  # slash, full-width semicolon
        ("HD-65W GaN  Pro", ("hd-65w gan pro",)),  # inner runs of spaces become one
        ("KX-100、、KX-100", ("kx-100",)),  # empty parts and repeats dropped
        ("PD20W-C（白色）", ("pd20w-c(白色)",)),  # full-width brackets folded, Chinese kept
        ("、 ,", ()),
    ],
)
def test_model_keys_normalise_the_way_a_reader_compares(
    written: str, keys: tuple[str, ...]
) -> None:
    assert model_keys(written) == keys


def test_model_keys_never_match_by_similarity() -> None:
    assert model_keys("KX-100") != model_keys("KX100")
    assert model_keys("KX-100") != model_keys("KX-1OO")  # letter O is not zero


def test_certificate_model_keys_cover_every_entry_of_the_list() -> None:
    models = ["HW-050200CP0、HW-050200EP0", "hw-059200cp0 / HW-100225CP0"]
    assert certificate_model_keys(models) == (
        "hw-050200cp0",
        "hw-050200ep0",
        "hw-059200cp0",
        "hw-100225cp0",
    )


PHONE = "2022011606454871"  # category 1606, mobile phones


def models_view(*models: str, category: str = "0907") -> CertView:
    return view(category_code=category, models=certificate_model_keys(models))


def test_a_listed_model_passes_with_its_evidence() -> None:
    result = evaluate([CHARGER], "0907", {CHARGER: models_view("KX-100、KX-200")}, NOW, "kx-200")
    assert result.passes and not result.warnings
    (evidence,) = result.evidence
    assert evidence.models_matched == ("kx-200",) and not evidence.reasons


def test_an_unlisted_model_warns_by_default_and_keeps_the_action() -> None:
    result = evaluate([CHARGER], "0907", {CHARGER: models_view("KX-100")}, NOW, "KX-900")
    assert result.passes
    assert result.warnings == (VerdictWarning.MODEL_MISMATCH,)
    assert result.evidence[0].warnings == (VerdictWarning.MODEL_MISMATCH,)
    assert result.evidence[0].models_matched == ()
    assert listing_event_action(result) is VerdictAction.ALLOW
    assert result.rules_version == f"{RULES_VERSION};model=WARN"


def test_an_unlisted_model_blocks_under_block() -> None:
    result = evaluate(
        [CHARGER], "0907", {CHARGER: models_view("KX-100")}, NOW, "KX-900", ModelPolicy.BLOCK
    )
    assert result.reasons == (VerdictReason.MODEL_MISMATCH,)
    assert result.failing_certs == (CHARGER,) and not result.warnings
    assert result.evidence[0].reasons == (VerdictReason.MODEL_MISMATCH,)
    assert result.rules_version.endswith(";model=BLOCK")
    # A live listing whose certificate drops the model is taken down by the re-check.
    assert recheck_action(True, result) is VerdictAction.TAKEDOWN


def test_a_bundle_passes_when_either_certificate_lists_the_model() -> None:
    views = {CHARGER: models_view("PD-20W"), PHONE: models_view("X9 Pro", category="1606")}
    result = evaluate([PHONE, CHARGER], None, views, NOW, "X9 PRO", ModelPolicy.BLOCK)
    assert result.passes
    assert [e.models_matched for e in result.evidence] == [("x9 pro",), ()]


def test_every_model_a_listing_names_must_be_listed() -> None:
    views = {CHARGER: models_view("KX-100")}
    result = evaluate([CHARGER], None, views, NOW, "KX-100、KX-200", ModelPolicy.BLOCK)
    assert result.reasons == (VerdictReason.MODEL_MISMATCH,)
    assert result.evidence[0].models_matched == ("kx-100",)


@pytest.mark.parametrize(
    ("listing_model", "models"),
    [(None, ("KX-100",)), ("", ("KX-100",)), ("KX-900", ())],
    ids=["no listing model", "empty listing model", "certificate lists none"],
)
def test_the_model_is_checked_only_when_both_sides_name_models(
    listing_model: str | None, models: tuple[str, ...]
) -> None:
    views = {CHARGER: models_view(*models)}
    result = evaluate([CHARGER], "0907", views, NOW, listing_model, ModelPolicy.BLOCK)
    assert result.passes and not result.warnings
    assert result.evidence[0].models_matched is None


def test_evidence_says_what_was_seen_of_each_claimed_certificate() -> None:
    suspended = view(CertificateStatus.SUSPENDED, version=4)
    result = evaluate(["2O17010907948411", CHARGER, PHONE], "0907", {CHARGER: suspended}, NOW)
    malformed, seen, unknown = result.evidence
    assert (malformed.view, malformed.reasons) == (
        None,
        (VerdictReason.INVALID_CERTIFICATE_NUMBER,),
    )
    assert seen.view == suspended and seen.reasons == (VerdictReason.CERTIFICATE_SUSPENDED,)
    assert unknown.view is None and unknown.reasons == (VerdictReason.CERTIFICATE_NOT_FOUND,)
    record = seen.as_record()
    assert (record["known"], record["status"], record["version"]) == (True, "SUSPENDED", 4)
    assert unknown.as_record()["known"] is False


def test_a_v1_consumer_sees_only_the_reasons_v1_names() -> None:
    result = evaluate(
        [CHARGER], "0713", {CHARGER: models_view("KX-1")}, NOW, "KX-2", ModelPolicy.BLOCK
    )
    verdict = Verdict(
        "v", "L", "jd", "S", VerdictAction.BLOCK, result.reasons, (CHARGER,),
        result.failing_certs, VerdictTrigger.LISTING_EVENT, "E", NOW, NOW,
        result.warnings, result.evidence, result.rules_version,
    )  # fmt: skip
    record = verdict.as_record()
    assert record["reasons"] == ["CATEGORY_MISMATCH"]
    assert record["reason_codes"] == ["CATEGORY_MISMATCH", "MODEL_MISMATCH"]
    assert Verdict.from_record(record).as_record() == record


def test_rules_choose_the_model_policy_per_platform() -> None:
    rules = Rules(ModelPolicy.WARN, {"jd": ModelPolicy.BLOCK})
    assert rules.model_policy("jd") is ModelPolicy.BLOCK
    assert rules.model_policy("tmall") is ModelPolicy.WARN
