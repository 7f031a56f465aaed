"""The wire contract (``avro/``) and its codec (``topics.codecs``), without a broker."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint as crc64_hex
from fastavro.schema import to_parsing_canonical_form

from streams.errors import (
    BadMagicError,
    ConfigError,
    DecodeError,
    MalformedBodyError,
    UnknownSchemaError,
)
from topics.codecs import DEFAULT_SCHEMA_DIR, HEADER_SIZE, MAGIC, AvroCodec

SAMPLES: dict[str, dict[str, Any]] = {
    "ListingEvent": {
        "event_id": "evt-2f6c1a9e",
        "event_type": "UPDATED",
        "platform": "tmall",
        "listing_id": "672349817234",
        "shop_id": "shop-88123",
        "title": "65W 氮化镓快充充电器",
        "category_code": "0907",
        "brand": "Acme",
        "model": "AD65",
        "cert_numbers": ["2021011609123456", "2020010907654321"],
        "occurred_at": 1_735_689_600_123,
    },
    "CertificateStatusChanged": {
        "cert_no": "2021011609123456",
        "status": "SUSPENDED",
        "version": 7,
        "holder": "Acme Electronics Co., Ltd.",
        "manufacturer": "Acme Electronics Co., Ltd.",
        "factory": "Acme Dongguan Factory",
        "product_name": "Power adapter",
        "category_code": "0907",
        "models": ["AD65", "AD65-EU"],
        "issued_on": 18_993,  # 2022-01-01
        "expires_on": 20_819,  # 2027-01-01
        "certification_body": "CQC",
        "reason": "failed supervisory sampling",
        "changed_at": 1_735_689_600_000,
    },
    "ListingVerdict": {
        "verdict_id": "vrd-1",
        "listing_id": "672349817234",
        "platform": "tmall",
        "shop_id": "shop-88123",
        "action": "TAKEDOWN",
        "reasons": ["CERTIFICATE_SUSPENDED", "CATEGORY_MISMATCH"],
        "cert_numbers": ["2021011609123456"],
        "failing_certs": ["2021011609123456"],
        "trigger": "CERTIFICATE_CHANGE",
        "trigger_id": "2021011609123456:7",
        "event_time": 1_735_689_600_000,
        "decided_at": 1_735_689_600_250,
        "reason_codes": ["CERTIFICATE_SUSPENDED", "CATEGORY_MISMATCH", "MODEL_MISMATCH"],
        "warnings": ["MODEL_MISMATCH"],
        "evidence": [
            {
                "cert_no": "2021011609123456",
                "known": True,
                "status": "SUSPENDED",
                "version": 7,
                "valid_until": 21_000,
                "category_code": "1606",
                "models_matched": ["kx-100"],
                "reasons": ["CERTIFICATE_SUSPENDED", "CATEGORY_MISMATCH", "MODEL_MISMATCH"],
                "warnings": ["MODEL_MISMATCH"],
            },
            {
                "cert_no": "2O21011609123456",
                "known": False,
                "status": None,
                "version": None,
                "valid_until": None,
                "category_code": None,
                "models_matched": None,
                "reasons": ["INVALID_CERTIFICATE_NUMBER"],
                "warnings": [],
            },
        ],
        "rules_version": "2;model=BLOCK",
    },
    "DeadLetter": {
        "source_topic": "listing-events",
        "partition": 3,
        "offset": 1_234_567,
        "key": b"tmall:672349817234",
        "payload": b"\xc3\x01\x00garbage",
        "error": "writer fingerprint 0000000000000000 matches no schema",
        "failed_at": 1_735_689_600_500,
    },
    "ShopAlert": {
        "alert_id": "3f1d2c4e-0b6a-5d7e-9f80-1a2b3c4d5e6f",
        "kind": "RAISED",
        "platform": "tmall",
        "shop_id": "shop-88123",
        "crossing": 2,
        "window_start": "2024-12-03",
        "window_end": "2025-01-01",
        "window_days": 30,
        "blocks": 1,
        "takedowns": 3,
        "by_reason": [
            {"action": "BLOCK", "reason": "NO_CERTIFICATE", "count": 1},
            {"action": "TAKEDOWN", "reason": "CERTIFICATE_REVOKED", "count": 3},
        ],
        "distinct_listings": 3,
        "distinct_certificates": 2,
        "threshold_takedowns": 3,
        "threshold_blocks": 0,
        "sample_listing_ids": ["672349817234", "672349817001"],
        "cause": "6a3b1f0e-2c4d-5e6f-8a9b-0c1d2e3f4a5b",
        "decided_at": 1_735_689_600_900,
    },
}

# Every optional field absent, every array empty: the other corner of each record.
SPARSE: dict[str, dict[str, Any]] = {
    "ListingEvent": {
        **SAMPLES["ListingEvent"],
        "event_type": "DELISTED",
        "category_code": None,
        "brand": None,
        "model": None,
        "cert_numbers": [],
        "title": "",
    },
    "CertificateStatusChanged": {
        **SAMPLES["CertificateStatusChanged"],
        "factory": None,
        "category_code": None,
        "reason": None,
        "models": [],
        "issued_on": -1,  # 1969-12-31: dates before the epoch are negative
    },
    "ListingVerdict": {
        **SAMPLES["ListingVerdict"],
        "action": "ALLOW",
        "reasons": [],
        "cert_numbers": [],
        "failing_certs": [],
        "reason_codes": [],
        "warnings": [],
        "evidence": [],
        "rules_version": "",
    },
    "DeadLetter": {**SAMPLES["DeadLetter"], "key": None, "payload": b""},
    "ShopAlert": {
        **SAMPLES["ShopAlert"],
        "kind": "CLEARED",
        "by_reason": [],
        "sample_listing_ids": [],
    },
}

# The versions after v1: each starts with its predecessor's fields, in order, and adds fields
# with defaults, so every reader version reads every writer version.
LATEST_VERSION: dict[str, int] = {"ListingVerdict": 2}
V2_FINGERPRINTS: dict[str, str] = {"ListingVerdict": "12a41de06ce0dd6a"}
V2_ADDED_FIELDS: dict[str, list[str]] = {
    "ListingVerdict": ["reason_codes", "warnings", "evidence", "rules_version"]
}

# The field order is part of the contract: the canonical form, and so the fingerprint, keeps it.
FIELD_ORDER: dict[str, list[str]] = {
    "ListingEvent": [
        "event_id",
        "event_type",
        "platform",
        "listing_id",
        "shop_id",
        "title",
        "category_code",
        "brand",
        "model",
        "cert_numbers",
        "occurred_at",
    ],
    "CertificateStatusChanged": [
        "cert_no",
        "status",
        "version",
        "holder",
        "manufacturer",
        "factory",
        "product_name",
        "category_code",
        "models",
        "issued_on",
        "expires_on",
        "certification_body",
        "reason",
        "changed_at",
    ],
    "ListingVerdict": [
        "verdict_id",
        "listing_id",
        "platform",
        "shop_id",
        "action",
        "reasons",
        "cert_numbers",
        "failing_certs",
        "trigger",
        "trigger_id",
        "event_time",
        "decided_at",
    ],
    "DeadLetter": [
        "source_topic",
        "partition",
        "offset",
        "key",
        "payload",
        "error",
        "failed_at",
    ],
    "ShopAlert": [
        "alert_id",
        "kind",
        "platform",
        "shop_id",
        "crossing",
        "window_start",
        "window_end",
        "window_days",
        "blocks",
        "takedowns",
        "by_reason",
        "distinct_listings",
        "distinct_certificates",
        "threshold_takedowns",
        "threshold_blocks",
        "sample_listing_ids",
        "cause",
        "decided_at",
    ],
}

ENUM_SYMBOLS: dict[str, list[str]] = {
    "ccc.guard.ListingEventType": ["CREATED", "UPDATED", "DELISTED"],
    "ccc.guard.CertificateStatus": ["VALID", "SUSPENDED", "REVOKED", "CANCELLED", "EXPIRED"],
    "ccc.guard.VerdictAction": ["ALLOW", "BLOCK", "TAKEDOWN", "RESTORE"],
    "ccc.guard.VerdictReason": [
        "NO_CERTIFICATE",
        "INVALID_CERTIFICATE_NUMBER",
        "CERTIFICATE_NOT_FOUND",
        "CERTIFICATE_SUSPENDED",
        "CERTIFICATE_REVOKED",
        "CERTIFICATE_CANCELLED",
        "CERTIFICATE_EXPIRED",
        "CATEGORY_MISMATCH",
    ],
    "ccc.guard.VerdictTrigger": ["LISTING_EVENT", "CERTIFICATE_CHANGE", "CERTIFICATE_EXPIRY"],
    "ccc.guard.ShopAlertKind": ["RAISED", "CLEARED", "OTHER"],
}

# Golden fingerprints of the v1 files. A change here means the v1 wire format changed under
# running producers and consumers; add a v2 file instead.
V1_FINGERPRINTS: dict[str, str] = {
    "ListingEvent": "8f83742048ed1cd1",
    "CertificateStatusChanged": "59d7025037a46fc6",
    "ListingVerdict": "c30ad5142e5924d5",
    "DeadLetter": "dac2d5feea08d070",
    "ShopAlert": "a3b48f5a330a878e",
}

LOGICAL_TYPES: dict[str, dict[str, str]] = {
    "ListingEvent": {"occurred_at": "timestamp-millis"},
    "CertificateStatusChanged": {
        "issued_on": "date",
        "expires_on": "date",
        "changed_at": "timestamp-millis",
    },
    "ListingVerdict": {"event_time": "timestamp-millis", "decided_at": "timestamp-millis"},
    "DeadLetter": {"failed_at": "timestamp-millis"},
    "ShopAlert": {"decided_at": "timestamp-millis"},
}


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


def _file(name: str, version: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (DEFAULT_SCHEMA_DIR / f"{name}.v{version}.avsc").read_text(encoding="utf-8")
    )
    return loaded


def _latest_file(name: str) -> dict[str, Any]:
    return _file(name, LATEST_VERSION.get(name, 1))


def _v1_file(name: str) -> dict[str, Any]:
    return _file(name, 1)


def _fingerprint_of(schema: Any) -> bytes:
    return bytes.fromhex(crc64_hex(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def _zigzag(n: int) -> bytes:
    """Avro varint encoding of a long, for hand-built bodies."""
    raw = (n << 1) ^ (n >> 63)
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def _avro_str(text: str) -> bytes:
    data = text.encode()
    return _zigzag(len(data)) + data


def _listing_value(codec: AvroCodec, **raw_fields: bytes) -> bytes:
    """A ListingEvent value assembled by hand, with some fields' bytes replaced."""
    fields = {
        "event_id": _avro_str("e-1"),
        "event_type": _zigzag(1),
        "platform": _avro_str("tmall"),
        "listing_id": _avro_str("L1"),
        "shop_id": _avro_str("S1"),
        "title": _avro_str("充电器"),
        "category_code": _zigzag(1) + _avro_str("0907"),
        "brand": _zigzag(0),
        "model": _zigzag(0),
        "cert_numbers": _zigzag(1) + _avro_str("2021011609123456") + _zigzag(0),
        "occurred_at": _zigzag(1_700_000_000_000),
    }
    assert set(raw_fields) <= set(fields)
    fields.update(raw_fields)
    return MAGIC + codec.fingerprint("ListingEvent") + b"".join(fields.values())


HAND_BUILT_LISTING: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "UPDATED",
    "platform": "tmall",
    "listing_id": "L1",
    "shop_id": "S1",
    "title": "充电器",
    "category_code": "0907",
    "brand": None,
    "model": None,
    "cert_numbers": ["2021011609123456"],
    "occurred_at": 1_700_000_000_000,
}


def _dead_letter_value(codec: AvroCodec, partition: bytes) -> bytes:
    body = (
        _avro_str("t")
        + partition
        + _zigzag(5)
        + _zigzag(0)
        + _zigzag(1)
        + b"x"
        + _avro_str("e")
        + _zigzag(1)
    )
    return MAGIC + codec.fingerprint("DeadLetter") + body


# --- the contract files -----------------------------------------------------------------------


def test_schema_dir_holds_exactly_the_contract(codec: AvroCodec) -> None:
    assert codec.record_names == set(FIELD_ORDER)
    assert sorted(p.name for p in DEFAULT_SCHEMA_DIR.glob("*.avsc")) == sorted(
        f"{name}.v{version}.avsc"
        for name in FIELD_ORDER
        for version in range(1, LATEST_VERSION.get(name, 1) + 1)
    )


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_field_order_is_the_contract(name: str) -> None:
    schema = _v1_file(name)
    assert schema["type"] == "record"
    assert schema["name"] == name
    assert schema["namespace"] == "ccc.guard"
    assert [field["name"] for field in schema["fields"]] == FIELD_ORDER[name]


def test_enum_symbols_are_the_contract() -> None:
    found: dict[str, list[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") == "enum":
                found[f"ccc.guard.{node['name']}"] = node["symbols"]
            for value in node.values():
                walk(value)

    for name in FIELD_ORDER:
        walk(_v1_file(name))
    assert found == ENUM_SYMBOLS


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_v1_fingerprints_are_pinned(name: str) -> None:
    assert _fingerprint_of(_v1_file(name)).hex() == V1_FINGERPRINTS[name]


@pytest.mark.parametrize("name", sorted(V2_FINGERPRINTS))
def test_v2_fingerprints_are_pinned(name: str) -> None:
    assert _fingerprint_of(_file(name, 2)).hex() == V2_FINGERPRINTS[name]


def _without_docs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_docs(v) for k, v in node.items() if k != "doc"}
    if isinstance(node, list):
        return [_without_docs(item) for item in node]
    return node


@pytest.mark.parametrize("name", sorted(V2_ADDED_FIELDS))
def test_v2_keeps_v1_and_adds_only_fields_with_defaults(name: str) -> None:
    v1, v2 = _file(name, 1)["fields"], _file(name, 2)["fields"]
    assert _without_docs(v2[: len(v1)]) == _without_docs(v1)
    added = v2[len(v1) :]
    assert [field["name"] for field in added] == V2_ADDED_FIELDS[name]
    assert all("default" in field and field["doc"] for field in added)


def _enums(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "enum":
            yield node
        for value in node.values():
            yield from _enums(value)
    elif isinstance(node, list):
        for item in node:
            yield from _enums(item)


def test_enums_new_in_v2_have_a_default_for_later_symbols() -> None:
    v1_enums = {e["name"] for e in _enums(_file("ListingVerdict", 1))}
    v1_enums |= {e["name"] for e in _enums(_file("CertificateStatusChanged", 1))}
    new = [e for e in _enums(_file("ListingVerdict", 2)) if e["name"] not in v1_enums]
    assert {e["name"] for e in new} == {"ReasonCode", "WarningCode"}
    assert all(e["default"] == "OTHER" == e["symbols"][-1] for e in new)


V1_VERDICT_FIELDS = FIELD_ORDER["ListingVerdict"]


@pytest.mark.parametrize("samples", [SAMPLES, SPARSE], ids=["full", "sparse"])
def test_a_v1_reader_reads_every_v2_verdict(
    codec: AvroCodec, samples: dict[str, dict[str, Any]]
) -> None:
    """A consumer built against v1 (its reader pinned to v1, the writer schema found by
    fingerprint) reads a v2 verdict as the v1 verdict it carries; so does plain fastavro
    resolving v2 into v1, whatever codec a consumer uses."""
    written = codec.encode("ListingVerdict", samples["ListingVerdict"])
    v1_view = {k: samples["ListingVerdict"][k] for k in V1_VERDICT_FIELDS}
    v1_reader = AvroCodec(read_as={"ListingVerdict": 1})
    assert v1_reader.decode("ListingVerdict", written) == v1_view
    plain = fastavro.schemaless_reader(
        io.BytesIO(written[HEADER_SIZE:]),
        fastavro.parse_schema(_file("ListingVerdict", 2)),
        fastavro.parse_schema(_v1_file("ListingVerdict")),
    )
    as_datetimes = {
        name: dt.datetime.fromtimestamp(v1_view[name] / 1000, dt.UTC)
        for name in ("event_time", "decided_at")  # plain fastavro applies the logical types
    }
    assert plain == {**v1_view, **as_datetimes}


def test_a_v2_reader_reads_v1_verdicts_with_the_defaults(codec: AvroCodec) -> None:
    v1_record = {k: SAMPLES["ListingVerdict"][k] for k in V1_VERDICT_FIELDS}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(_v1_file("ListingVerdict")), v1_record)
    written = MAGIC + bytes.fromhex(V1_FINGERPRINTS["ListingVerdict"]) + body.getvalue()
    assert codec.decode("ListingVerdict", written) == {
        **v1_record,
        "reason_codes": [],
        "warnings": [],
        "evidence": [],
        "rules_version": "",
    }


def test_a_reason_code_added_later_reads_as_other(tmp_path: Path) -> None:
    """Why the new enums have a default: a v3 that adds a reason code is read by a v2 reader
    as OTHER, not refused."""
    v3 = _file("ListingVerdict", 2)
    v3["doc"] = v3["doc"].replace("Version 2", "Version 3")
    reason_code = next(e for e in _enums(v3) if e["name"] == "ReasonCode")
    reason_code["symbols"].insert(-1, "QUALITY_CODE_MISSING")
    for path in DEFAULT_SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    _write(tmp_path, "ListingVerdict.v3.avsc", v3)
    record = {**SAMPLES["ListingVerdict"], "reason_codes": ["QUALITY_CODE_MISSING"]}
    written = AvroCodec(tmp_path).encode("ListingVerdict", record)
    read = AvroCodec(tmp_path, read_as={"ListingVerdict": 2}).decode("ListingVerdict", written)
    assert read["reason_codes"] == ["OTHER"]


def test_read_as_names_a_version_that_exists() -> None:
    with pytest.raises(ConfigError, match="no ListingVerdict v9"):
        AvroCodec(read_as={"ListingVerdict": 9})


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_every_record_and_field_is_documented(name: str) -> None:
    schema = _v1_file(name)
    assert schema["doc"].strip()
    for field in schema["fields"]:
        assert field.get("doc", "").strip(), f"{name}.{field['name']} has no doc"


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_optional_fields_default_to_null(name: str) -> None:
    for field in _v1_file(name)["fields"]:
        if isinstance(field["type"], list):
            assert field["type"][0] == "null"
            assert "default" in field and field["default"] is None, field["name"]


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_logical_types_are_declared(name: str) -> None:
    declared = {
        field["name"]: field["type"]["logicalType"]
        for field in _v1_file(name)["fields"]
        if isinstance(field["type"], dict) and "logicalType" in field["type"]
    }
    assert declared == LOGICAL_TYPES[name]


# --- fingerprints -----------------------------------------------------------------------------


def test_int_fingerprint_vector() -> None:
    # The Java reference gives 0x7275D51A3F395C8F for "int"; on the wire it is little-endian.
    assert crc64_hex(to_parsing_canonical_form("int"), "CRC-64-AVRO") == "8f5c393f1ad57572"
    assert _fingerprint_of("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")


@pytest.mark.parametrize(
    ("schema", "java_fingerprint"),
    [
        # From Avro's share/test/data/schema-tests.txt (signed Java longs).
        ("null", 7195948357588979594),
        ("string", -8142146995180207161),
        (
            {
                "fields": [{"type": {"type": "boolean"}, "name": "f1"}],
                "type": "record",
                "name": "foo",
            },
            7843277075252814651,
        ),
        (
            {
                "namespace": "x.y.z",
                "type": "enum",
                "name": "foo",
                "doc": "foo bar",
                "symbols": ["A1", "A2"],
            },
            -4448647247586288245,
        ),
    ],
)
def test_reference_fingerprint_vectors(schema: Any, java_fingerprint: int) -> None:
    assert _fingerprint_of(schema) == java_fingerprint.to_bytes(8, "little", signed=True)


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_header_is_magic_then_fingerprint(codec: AvroCodec, name: str) -> None:
    encoded = codec.encode(name, SAMPLES[name])
    expected = _fingerprint_of(_latest_file(name))
    assert codec.fingerprint(name) == expected
    assert len(expected) == 8
    assert encoded[:2] == b"\xc3\x01"
    assert encoded[2:HEADER_SIZE] == expected
    assert HEADER_SIZE == 10


def test_logical_types_do_not_change_the_fingerprint() -> None:
    schema = _v1_file("CertificateStatusChanged")
    plain = copy.deepcopy(schema)
    for field in plain["fields"]:
        if isinstance(field["type"], dict):
            field["type"].pop("logicalType", None)
    assert _fingerprint_of(plain) == _fingerprint_of(schema)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
@pytest.mark.parametrize("samples", [SAMPLES, SPARSE], ids=["full", "sparse"])
def test_round_trip(codec: AvroCodec, name: str, samples: dict[str, dict[str, Any]]) -> None:
    record = samples[name]
    assert codec.decode(name, codec.encode(name, record)) == record


def test_decoded_values_are_plain_python(codec: AvroCodec) -> None:
    decoded = codec.decode("ListingEvent", codec.encode("ListingEvent", SAMPLES["ListingEvent"]))
    assert type(decoded) is dict
    assert type(decoded["event_type"]) is str  # enums decode to their symbol
    assert type(decoded["cert_numbers"]) is list
    assert type(decoded["occurred_at"]) is int
    dead = codec.decode("DeadLetter", codec.encode("DeadLetter", SAMPLES["DeadLetter"]))
    assert type(dead["key"]) is bytes
    assert type(dead["payload"]) is bytes


def test_logical_types_stay_ints(codec: AvroCodec) -> None:
    record = SAMPLES["CertificateStatusChanged"]
    decoded = codec.decode(
        "CertificateStatusChanged", codec.encode("CertificateStatusChanged", record)
    )
    for field in ("issued_on", "expires_on", "changed_at"):
        assert type(decoded[field]) is int, field
        assert decoded[field] == record[field]
    with pytest.raises(ValueError, match="issued_on"):
        codec.encode("CertificateStatusChanged", {**record, "issued_on": dt.date(2022, 1, 1)})
    with pytest.raises(ValueError, match="changed_at"):
        codec.encode(
            "CertificateStatusChanged",
            {**record, "changed_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)},
        )


def test_optional_fields_may_be_omitted_on_encode(codec: AvroCodec) -> None:
    record = {
        key: value
        for key, value in SAMPLES["ListingEvent"].items()
        if key not in ("brand", "model")
    }
    decoded = codec.decode("ListingEvent", codec.encode("ListingEvent", record))
    assert decoded["brand"] is None and decoded["model"] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"occurred_at": 1.5}, "occurred_at"),
        ({"occurred_at": True}, "occurred_at"),
        ({"occurred_at": 1 << 63}, "occurred_at"),
        ({"title": None}, "title"),
        ({"brand": 3}, "brand"),
        ({"event_type": "DELETED"}, "event_type"),
        ({"cert_numbers": "2021011609123456"}, "cert_numbers"),
        ({"cert_numbers": ["ok", 7]}, r"cert_numbers\[1\]"),
        ({"brnad": "Acme"}, "brnad"),
    ],
)
def test_encode_rejects_mismatching_records(
    codec: AvroCodec, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        codec.encode("ListingEvent", {**SAMPLES["ListingEvent"], **change})


def test_encode_rejects_a_missing_field(codec: AvroCodec) -> None:
    record = {k: v for k, v in SAMPLES["ListingEvent"].items() if k != "shop_id"}
    with pytest.raises(ValueError, match="shop_id"):
        codec.encode("ListingEvent", record)


def test_encode_rejects_an_int_out_of_range(codec: AvroCodec) -> None:
    with pytest.raises(ValueError, match="partition"):
        codec.encode("DeadLetter", {**SAMPLES["DeadLetter"], "partition": 1 << 31})


def test_unknown_record_name_is_a_programming_error(codec: AvroCodec) -> None:
    with pytest.raises(ValueError, match="Listing"):
        codec.decode("Listing", codec.encode("ListingEvent", SAMPLES["ListingEvent"]))
    with pytest.raises(ValueError):
        codec.encode("Listing", SAMPLES["ListingEvent"])
    with pytest.raises(ValueError):
        codec.fingerprint("Listing")


# --- decode errors ----------------------------------------------------------------------------


def test_bad_magic(codec: AvroCodec) -> None:
    good = codec.encode("ListingEvent", SAMPLES["ListingEvent"])
    for value in (b"\xc3\x02" + good[2:], b"\x00" + good[1:], b'{"event_id": "e"}', b"\xc3"):
        with pytest.raises(BadMagicError):
            codec.decode("ListingEvent", value)


def test_empty_value_is_bad_magic(codec: AvroCodec) -> None:
    with pytest.raises(BadMagicError):
        codec.decode("ListingEvent", b"")


def test_truncated_header_is_unknown_schema(codec: AvroCodec) -> None:
    good = codec.encode("ListingEvent", SAMPLES["ListingEvent"])
    for cut in range(2, HEADER_SIZE):
        with pytest.raises(UnknownSchemaError):
            codec.decode("ListingEvent", good[:cut])


def test_header_only_is_malformed(codec: AvroCodec) -> None:
    with pytest.raises(MalformedBodyError):
        codec.decode("ListingEvent", MAGIC + codec.fingerprint("ListingEvent"))


@pytest.mark.parametrize("name", sorted(FIELD_ORDER))
def test_truncated_body_at_every_length(codec: AvroCodec, name: str) -> None:
    good = codec.encode(name, SAMPLES[name])
    for cut in range(HEADER_SIZE, len(good)):
        with pytest.raises(MalformedBodyError):
            codec.decode(name, good[:cut])


def test_trailing_bytes_are_malformed(codec: AvroCodec) -> None:
    good = codec.encode("ListingEvent", SAMPLES["ListingEvent"])
    for tail in (b"\x00", b"\x02", good):
        with pytest.raises(MalformedBodyError, match="trailing"):
            codec.decode("ListingEvent", good + tail)


def test_unknown_fingerprint(codec: AvroCodec) -> None:
    good = codec.encode("ListingEvent", SAMPLES["ListingEvent"])
    with pytest.raises(UnknownSchemaError):
        codec.decode("ListingEvent", MAGIC + bytes(8) + good[HEADER_SIZE:])


@pytest.mark.parametrize("written", sorted(FIELD_ORDER))
def test_a_record_of_another_type_is_unknown_schema(codec: AvroCodec, written: str) -> None:
    value = codec.encode(written, SAMPLES[written])
    for expected in FIELD_ORDER:
        if expected != written:
            with pytest.raises(UnknownSchemaError, match=written):
                codec.decode(expected, value)


def test_hand_built_body_matches_the_encoder(codec: AvroCodec) -> None:
    # Guards the helpers the malformed-body cases below rely on.
    assert codec.decode("ListingEvent", _listing_value(codec)) == HAND_BUILT_LISTING
    assert _listing_value(codec) == codec.encode("ListingEvent", HAND_BUILT_LISTING)


@pytest.mark.parametrize(
    "raw_fields",
    [
        pytest.param({"event_type": _zigzag(3)}, id="enum-index-too-high"),
        # fastavro alone would read -1 as the last symbol, DELISTED.
        pytest.param({"event_type": _zigzag(-1)}, id="enum-index-negative"),
        pytest.param({"category_code": _zigzag(2) + _avro_str("x")}, id="union-index-too-high"),
        pytest.param({"category_code": _zigzag(-1) + _avro_str("x")}, id="union-index-negative"),
        pytest.param({"occurred_at": b"\x80" * 10 + b"\x00"}, id="varint-11-bytes"),
        pytest.param({"occurred_at": b"\xff" * 9 + b"\x7f"}, id="varint-overflows-64-bits"),
        pytest.param({"title": _zigzag(-1) + b"x"}, id="negative-string-length"),
        pytest.param({"title": _zigzag(2) + b"\xc3\x28"}, id="invalid-utf8"),
        pytest.param({"title": _zigzag(3) + b"\xed\xa0\x80"}, id="utf8-encoded-surrogate"),
        pytest.param(
            {"cert_numbers": _zigzag(-1) + _zigzag(5) + _avro_str("ab") + _zigzag(0)},
            id="block-size-mismatch",
        ),
        pytest.param(
            {"cert_numbers": _zigzag(-1) + _zigzag(-3) + _avro_str("ab") + _zigzag(0)},
            id="negative-block-size",
        ),
        pytest.param(
            {"cert_numbers": _zigzag(1 << 40) + _avro_str("ab") + _zigzag(0)},
            id="block-count-beyond-the-data",
        ),
        pytest.param({"cert_numbers": _zigzag(1) + _avro_str("ab")}, id="array-without-end"),
    ],
)
def test_malformed_bodies(codec: AvroCodec, raw_fields: dict[str, bytes]) -> None:
    with pytest.raises(MalformedBodyError):
        codec.decode("ListingEvent", _listing_value(codec, **raw_fields))


@pytest.mark.parametrize(
    ("raw_fields", "expected"),
    [
        # Legal per the spec even though fastavro never writes them: several blocks, and a
        # negative count followed by the block's byte size.
        pytest.param(
            {"cert_numbers": _zigzag(1) + _avro_str("a") + _zigzag(1) + _avro_str("b") + b"\x00"},
            {"cert_numbers": ["a", "b"]},
            id="two-blocks",
        ),
        pytest.param(
            {"cert_numbers": _zigzag(-2) + _zigzag(4) + _avro_str("a") + _avro_str("b") + b"\x00"},
            {"cert_numbers": ["a", "b"]},
            id="sized-block",
        ),
        # A padded varint within 10 bytes: the Java decoder accepts it too.
        pytest.param({"occurred_at": b"\x80\x00"}, {"occurred_at": 0}, id="padded-varint"),
        pytest.param(
            {"occurred_at": b"\xfe" + b"\xff" * 8 + b"\x01"},
            {"occurred_at": (1 << 63) - 1},
            id="largest-long",
        ),
    ],
)
def test_unusual_but_valid_bodies(
    codec: AvroCodec, raw_fields: dict[str, bytes], expected: dict[str, Any]
) -> None:
    decoded = codec.decode("ListingEvent", _listing_value(codec, **raw_fields))
    assert decoded == {**HAND_BUILT_LISTING, **expected}


def test_int_fields_are_range_checked(codec: AvroCodec) -> None:
    assert codec.decode("DeadLetter", _dead_letter_value(codec, _zigzag(-(1 << 31))))[
        "partition"
    ] == -(1 << 31)
    for partition in (_zigzag(1 << 31), _zigzag(-(1 << 31) - 1), b"\x80" * 5 + b"\x00"):
        with pytest.raises(MalformedBodyError):
            codec.decode("DeadLetter", _dead_letter_value(codec, partition))


def test_random_bytes_raise_only_decode_errors(codec: AvroCodec) -> None:
    rng = random.Random(20240611)
    names = sorted(FIELD_ORDER)
    valid = [
        (name, codec.encode(name, samples[name])) for name in names for samples in (SAMPLES, SPARSE)
    ]
    decoded_count = 0
    for i in range(4000):
        name, good = rng.choice(valid)
        strategy = i % 5
        if strategy == 0:  # anything at all
            data = rng.randbytes(rng.randrange(0, 64))
        elif strategy == 1:  # a real header, then noise
            data = good[:HEADER_SIZE] + rng.randbytes(rng.randrange(0, 96))
        elif strategy == 2:  # a few bytes of a real body overwritten
            mutable = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                mutable[rng.randrange(HEADER_SIZE, len(mutable))] = rng.randrange(256)
            data = bytes(mutable)
        elif strategy == 3:  # bytes cut out of, or pushed into, a real body
            at = rng.randrange(HEADER_SIZE, len(good))
            if rng.random() < 0.5:
                data = good[:at] + good[at + rng.randint(1, 4) :]
            else:
                data = good[:at] + rng.randbytes(rng.randint(1, 4)) + good[at:]
        else:  # a real body with a stray magic or fingerprint byte
            mutable = bytearray(good)
            mutable[rng.randrange(0, HEADER_SIZE)] ^= 1 << rng.randrange(8)
            data = bytes(mutable)
        target = name if rng.random() < 0.9 else rng.choice(names)
        try:
            value = codec.decode(target, data)
        except DecodeError:
            continue
        decoded_count += 1
        # Whatever decodes is a valid record: it encodes again and reads back the same.
        assert codec.decode(target, codec.encode(target, value)) == value
    assert decoded_count > 0  # the mutations do reach the happy path sometimes


# --- schema evolution -------------------------------------------------------------------------


def _widget(version: int, extra_fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Widget",
        "namespace": "ccc.guard",
        "doc": f"Version {version} of a test record.",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "made_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            *extra_fields,
        ],
    }


def _write(directory: Path, file_name: str, schema: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    text = schema if isinstance(schema, str) else json.dumps(schema, indent=2)
    (directory / file_name).write_text(text, encoding="utf-8")


def test_v1_body_reads_as_v2_with_the_default(tmp_path: Path) -> None:
    unit = {"name": "unit", "type": "string", "default": "mm", "doc": "Added in v2."}
    _write(tmp_path / "old", "Widget.v1.avsc", _widget(1, []))
    _write(tmp_path / "new", "Widget.v1.avsc", _widget(1, []))
    _write(tmp_path / "new", "Widget.v2.avsc", _widget(2, [unit]))
    old, new = AvroCodec(tmp_path / "old"), AvroCodec(tmp_path / "new")

    v1_record = {"id": "w1", "kind": "B", "made_at": 1_700_000_000_000}
    from_old = old.encode("Widget", v1_record)
    assert new.decode("Widget", from_old) == {**v1_record, "unit": "mm"}

    # The new codec writes v2, and knows it is v2.
    assert new.fingerprint("Widget") != old.fingerprint("Widget")
    from_new = new.encode("Widget", {**v1_record, "unit": "cm"})
    assert from_new[2:HEADER_SIZE] == new.fingerprint("Widget")
    assert new.decode("Widget", from_new) == {**v1_record, "unit": "cm"}
    # A reader that predates v2 cannot know its fingerprint: upgrade consumers first.
    with pytest.raises(UnknownSchemaError):
        old.decode("Widget", from_new)


def test_resolution_failure_is_malformed(tmp_path: Path) -> None:
    v2 = _widget(2, [])
    v2["fields"][1]["type"]["symbols"] = ["A"]  # v2 drops symbol B, with no enum default
    _write(tmp_path, "Widget.v1.avsc", _widget(1, []))
    _write(tmp_path, "Widget.v2.avsc", v2)
    _write(tmp_path / "old", "Widget.v1.avsc", _widget(1, []))
    old, new = AvroCodec(tmp_path / "old"), AvroCodec(tmp_path)
    assert new.decode("Widget", old.encode("Widget", {"id": "w", "kind": "A", "made_at": 0}))
    with pytest.raises(MalformedBodyError):
        new.decode("Widget", old.encode("Widget", {"id": "w", "kind": "B", "made_at": 0}))


def test_real_listing_event_v1_reads_as_v2(tmp_path: Path) -> None:
    v1_dir, both_dir = tmp_path / "v1", tmp_path / "both"
    for directory in (v1_dir, both_dir):
        directory.mkdir()
        for path in DEFAULT_SCHEMA_DIR.glob("*.avsc"):
            shutil.copy(path, directory / path.name)
    v2 = _v1_file("ListingEvent")
    v2["doc"] = v2["doc"].replace("Version 1", "Version 2")
    v2["fields"].append(
        {"name": "price_fen", "type": "long", "default": -1, "doc": "Test-only field."}
    )
    _write(both_dir, "ListingEvent.v2.avsc", v2)
    v1_codec, both_codec = AvroCodec(v1_dir), AvroCodec(both_dir)

    written = v1_codec.encode("ListingEvent", SAMPLES["ListingEvent"])
    assert written[2:HEADER_SIZE] == bytes.fromhex(V1_FINGERPRINTS["ListingEvent"])
    assert both_codec.decode("ListingEvent", written) == {
        **SAMPLES["ListingEvent"],
        "price_fen": -1,
    }
    # The other records are untouched by ListingEvent's new version.
    verdict = v1_codec.encode("ListingVerdict", SAMPLES["ListingVerdict"])
    assert both_codec.decode("ListingVerdict", verdict) == SAMPLES["ListingVerdict"]


# --- broken schema directories ----------------------------------------------------------------


def test_missing_or_empty_schema_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AvroCodec(tmp_path / "absent")
    with pytest.raises(ConfigError):
        AvroCodec(tmp_path)


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        pytest.param("Widget.v1.avsc", "{not json", id="not-json"),
        pytest.param("Widget.v1.avsc", '"string"', id="not-a-record"),
        pytest.param(
            "Widget.v1.avsc",
            {
                "type": "record",
                "name": "Widget",
                "namespace": "ccc.guard",
                "fields": [{"name": "x", "type": "no_such_type"}],
            },
            id="unknown-type",
        ),
        pytest.param("Gadget.v1.avsc", _widget(1, []), id="file-name-disagrees"),
        pytest.param(
            "Widget.v1.avsc", {**_widget(1, []), "namespace": "other"}, id="wrong-namespace"
        ),
        pytest.param("Widget.avsc", _widget(1, []), id="no-version"),
        pytest.param("Widget.v01.avsc", _widget(1, []), id="padded-version"),
        pytest.param("Widget.v0.avsc", _widget(1, []), id="version-zero"),
    ],
)
def test_broken_schema_file(tmp_path: Path, file_name: str, content: Any) -> None:
    _write(tmp_path, file_name, content)
    with pytest.raises(ConfigError):
        AvroCodec(tmp_path)


def test_two_versions_with_one_canonical_form(tmp_path: Path) -> None:
    v2 = _widget(2, [])  # only the doc differs from v1
    _write(tmp_path, "Widget.v1.avsc", _widget(1, []))
    _write(tmp_path, "Widget.v2.avsc", v2)
    with pytest.raises(ConfigError, match="same canonical form"):
        AvroCodec(tmp_path)


def test_two_files_defining_one_name_differently(tmp_path: Path) -> None:
    gadget = _widget(1, [])
    gadget["name"] = "Gadget"
    gadget["fields"][1]["type"]["symbols"] = ["A", "B", "C"]  # another ccc.guard.Kind
    _write(tmp_path, "Widget.v1.avsc", _widget(1, []))
    _write(tmp_path, "Gadget.v1.avsc", gadget)
    with pytest.raises(ConfigError, match=r"ccc\.guard\.Kind"):
        AvroCodec(tmp_path)
    # The same definition twice is fine.
    gadget["fields"][1]["type"]["symbols"] = ["A", "B"]
    _write(tmp_path, "Gadget.v1.avsc", gadget)
    assert AvroCodec(tmp_path).record_names == {"Widget", "Gadget"}
