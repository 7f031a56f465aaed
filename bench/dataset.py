"""The benchmark's data set: seeded, realistic, generated on the fly (never stored).

- certificates: mostly VALID, some in every other status, a few already past their valid-until
  day; 16-digit numbers with real category codes.
- listings: each claims 1 certificate (80 %), 2 (15 %) or 3 (5 %), drawn with a Zipf-like
  popularity (weight 1/rank), so a few certificates are claimed by tens of thousands of
  listings; the most popular one is claimed by exactly ``hot_claims`` listings, for the
  revocation fan-out. About 5 % of listings have a bad claim: none at all, a malformed number
  (letter O for zero), or a well-formed number that was never issued.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streams.clock import DAY_MS

CATEGORIES = ("0907", "0901", "0911", "1606", "0706", "0713", "0801", "0813")
STATUSES = ("VALID", "SUSPENDED", "REVOKED", "CANCELLED", "EXPIRED")
STATUS_WEIGHTS = (0.92, 0.03, 0.02, 0.02, 0.01)
PLATFORMS = ("taobao", "tmall", "jd", "douyin", "kuaishou", "pinduoduo")


@dataclass(frozen=True)
class Profile:
    name: str
    certificates: int
    listings: int
    hot_claims: int  # listings claiming the hottest certificate
    latency_seconds: int  # per offered load of the latency stage
    floor_records: int  # records each Faust floor agent reads


FULL = Profile("full", 100_000, 1_000_000, 100_000, 30, 200_000)
QUICK = Profile("quick", 10_000, 200_000, 100_000, 10, 50_000)


def cert_number(index: int) -> str:
    category = CATEGORIES[index % len(CATEGORIES)]
    return f"{2016 + index % 9}01{category}{index:06d}"


class DataSet:
    def __init__(self, profile: Profile, seed: int = 2026, now_ms: int = 1_795_000_000_000) -> None:
        self.profile, self.seed, self.now_ms = profile, seed, now_ms
        self.hot_cert = cert_number(0)
        weights = [1.0 / (rank + 1) for rank in range(1, profile.certificates)]
        self._cumulative = list(itertools.accumulate(weights))

    def certificates(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed)
        today = self.now_ms // DAY_MS
        for index in range(self.profile.certificates):
            status = "VALID" if index == 0 else rng.choices(STATUSES, STATUS_WEIGHTS)[0]
            expires_on = (
                today - rng.randint(1, 30)
                if rng.random() < 0.002
                else today + rng.randint(30, 1800)
            )
            cert = cert_number(index)
            yield {
                "cert_no": cert,
                "status": status,
                "version": 1,
                "holder": f"Holder {index % 5000} Co., Ltd.",
                "manufacturer": f"Maker {index % 3000} Co., Ltd.",
                "factory": None,
                "product_name": "charger",
                "category_code": cert[6:10],
                "models": [f"M-{index}", "X-1"],  # every listing's model
                "issued_on": expires_on - 5 * 365,
                "expires_on": expires_on,
                "certification_body": "CQC",
                "reason": None,
                "changed_at": self.now_ms - DAY_MS,
            }

    def _popular_cert(self, rng: random.Random) -> int:
        """A certificate index from 1..n-1 with weight 1/rank (0 is the hot one, assigned apart)."""
        point = rng.random() * self._cumulative[-1]
        return 1 + bisect.bisect_left(self._cumulative, point)

    def listing(
        self, n: int, rng: random.Random, *, occurred_at: int | None = None
    ) -> dict[str, Any]:
        """Listing ``n`` (CREATED); deterministic in (seed, n) when ``rng`` is seeded alike."""
        p = self.profile
        claims: list[str]
        roll = rng.random()
        if n < p.hot_claims:
            claims = [self.hot_cert]
        elif roll < 0.02:
            claims = []
        elif roll < 0.035:
            claims = [cert_number(self._popular_cert(rng)).replace("0", "O", 1)]
        elif roll < 0.05:
            claims = [f"2025019999{n % 1_000_000:06d}"]  # well-formed, never issued
        else:
            count = 1 if roll < 0.81 else 2 if roll < 0.96 else 3
            claims = list(dict.fromkeys(cert_number(self._popular_cert(rng)) for _ in range(count)))
        category = claims[0][6:10] if claims and claims[0][0].isdigit() else "0907"
        return {
            "event_id": f"B-{self.seed}-{n}",
            "event_type": "CREATED",
            "platform": PLATFORMS[n % len(PLATFORMS)],
            "listing_id": f"BL-{n:08d}",
            "shop_id": f"S-{n % 20_000}",
            "title": "65W GaN USB-C charger, 3 ports",
            "category_code": category,
            "brand": "Brand",
            "model": "X-1",
            "cert_numbers": claims,
            "occurred_at": self.now_ms + n if occurred_at is None else occurred_at,
        }

    def listings(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed + 1)
        for n in range(self.profile.listings):
            yield self.listing(n, rng)
