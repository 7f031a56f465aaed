"""Builders of wire records for tests: unique, well-formed ids and plain Avro dicts."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.clock import wall_clock_ms

now_ms = wall_clock_ms  # the builders' defaults and the tests read the one clock
_rng = random.Random(uuid.uuid4().int)
_serials = itertools.count(_rng.randrange(0, 900_000))
_year = _rng.randrange(2016, 2025)


def today_cst() -> int:
    """Today's date in China Standard Time, as days since 1970-01-01."""
    return (datetime.now(UTC) + timedelta(hours=8)).date().toordinal() - 719_163


def cert_no(category: str = "0907") -> str:
    """A well-formed certificate number no other test of this session uses."""
    return f"{_year}01{category}{next(_serials) % 1_000_000:06d}"


def listing_id() -> str:
    return f"L-{uuid.uuid4().hex[:12]}"


def listing_event(
    listing: str,
    certs: list[str],
    event_type: str = "CREATED",
    *,
    category: str | None = "0907",
    event_id: str | None = None,
    occurred_at: int | None = None,
    title: str = "65W USB-C charger",
    platform: str = "jd",
    shop: str = "S-001",
    model: str | None = "A-65",
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"E-{uuid.uuid4().hex}",
        "event_type": event_type,
        "platform": platform,
        "listing_id": listing,
        "shop_id": shop,
        "title": title,
        "category_code": category,
        "brand": "Acme",
        "model": model,
        "cert_numbers": certs,
        "occurred_at": now_ms() if occurred_at is None else occurred_at,
    }


def status_change(
    cert: str,
    status: str = "VALID",
    version: int = 1,
    *,
    category: str | None = "0907",
    expires_on: int | None = None,
    changed_at: int | None = None,
    models: tuple[str, ...] = ("A-65", "A-100"),
) -> dict[str, Any]:
    today = today_cst()
    return {
        "cert_no": cert,
        "status": status,
        "version": version,
        "holder": "Shenzhen Acme Power Co., Ltd.",
        "manufacturer": "Shenzhen Acme Power Co., Ltd.",
        "factory": None,
        "product_name": "USB-C charger",
        "category_code": category,
        "models": list(models),
        "issued_on": today - 700,
        "expires_on": today + 1000 if expires_on is None else expires_on,
        "certification_body": "China Quality Certification Centre",
        "reason": None if status == "VALID" else "surveillance",
        "changed_at": now_ms() if changed_at is None else changed_at,
    }
