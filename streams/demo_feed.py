"""The demo's synthetic platforms and certification authority: a seeded stream of listing
events and certificate status changes, with typos, unknown numbers and category mismatches
among them. Development only: the worker never imports this module."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

from streams.clock import DAY_MS, wall_clock_ms

PLATFORMS = ("taobao", "jd", "douyin", "kuaishou", "pinduoduo")
# (category code, product) pairs from the CCC catalogue, for believable listings.
PRODUCTS = (
    ("0907", "USB-C charger 65W"),
    ("0901", "laptop computer"),
    ("1606", "5G mobile phone"),
    ("0706", "electric water heater"),
    ("0713", "washing machine"),
    ("0911", "power bank 20000mAh"),
)


def cert_number(rng: random.Random, category: str) -> str:
    return f"{rng.randint(2016, 2024)}01{category}{rng.randint(0, 999_999):06d}"


def certificate(
    cert_no: str, category: str, product: str, status: str, version: int, at_ms: int
) -> dict[str, Any]:
    today = at_ms // DAY_MS
    return {
        "cert_no": cert_no,
        "status": status,
        "version": version,
        "holder": "Shenzhen Demo Electronics Co., Ltd.",
        "manufacturer": "Shenzhen Demo Electronics Co., Ltd.",
        "factory": "Dongguan Demo Factory",
        "product_name": product,
        "category_code": category,
        "models": ["DM-1", "DM-2"],
        "issued_on": today - 400,
        "expires_on": today - 400 + 5 * 365,
        "certification_body": "China Quality Certification Centre",
        "reason": None if status == "VALID" else "annual surveillance not passed",
        "changed_at": at_ms,
    }


@dataclasses.dataclass
class DemoFeed:
    """A seeded stream of listing events and certificate changes, with some bad input."""

    seed: int
    certificates: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    versions: dict[str, int] = dataclasses.field(default_factory=dict)
    statuses: dict[str, str] = dataclasses.field(default_factory=dict)
    listings: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for _ in range(24):
            category, product = self.rng.choice(PRODUCTS)
            self.certificates.append((cert_number(self.rng, category), category, product))

    def initial_certificates(self) -> Iterator[dict[str, Any]]:
        for cert_no, category, product in self.certificates:
            self.versions[cert_no] = 1
            self.statuses[cert_no] = "VALID"
            yield certificate(cert_no, category, product, "VALID", 1, wall_clock_ms())

    def listing_event(self, n: int) -> dict[str, Any]:
        rng = self.rng
        if self.listings and rng.random() < 0.15:
            listing_id = rng.choice(list(self.listings))
            event_type = "DELISTED" if rng.random() < 0.3 else "UPDATED"
        else:
            listing_id, event_type = f"L-{n:06d}", "CREATED"
        cert_no, category, product = rng.choice(self.certificates)
        certs = [cert_no]
        roll = rng.random()
        if roll < 0.04:
            certs = []  # no certificate at all
        elif roll < 0.08:
            certs = [cert_no.replace("0", "O", 1)]  # letter O for zero: a typo, not a number
        elif roll < 0.11:
            certs = [cert_number(rng, category)]  # well-formed but never issued
        elif roll < 0.14:
            category = "0713" if category != "0713" else "0907"  # wrong product category
        elif roll < 0.30:
            certs.append(rng.choice(self.certificates)[0])
        shop = f"S-{rng.randint(1, 40):03d}"
        platform = self.listings.get(listing_id, (rng.choice(PLATFORMS), ""))[0]
        if event_type == "DELISTED":
            self.listings.pop(listing_id, None)
        else:
            self.listings[listing_id] = (platform, shop)
        return {
            "event_id": f"E-{self.seed}-{n:07d}",
            "event_type": event_type,
            "platform": platform,
            "listing_id": listing_id,
            "shop_id": shop,
            "title": f"{product} (demo)",
            "category_code": category,
            "brand": "DemoBrand",
            "model": "DM-1",
            "cert_numbers": certs,
            "occurred_at": wall_clock_ms(),
        }

    def status_change(self) -> dict[str, Any]:
        """A certificate's next status; a withdrawn one is often reinstated, so the demo shows
        RESTOREs as well as TAKEDOWNs."""
        withdrawn = sorted(cert for cert, status in self.statuses.items() if status != "VALID")
        if withdrawn and self.rng.random() < 0.4:
            cert_no = self.rng.choice(withdrawn)
            status = "VALID"
        else:
            cert_no = self.rng.choice(self.certificates)[0]
            status = self.rng.choice(("SUSPENDED", "REVOKED", "VALID", "CANCELLED"))
        _, category, product = next(c for c in self.certificates if c[0] == cert_no)
        self.versions[cert_no] += 1
        self.statuses[cert_no] = status
        return certificate(
            cert_no, category, product, status, self.versions[cert_no], wall_clock_ms()
        )
