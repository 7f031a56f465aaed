"""The shop side's bytes: the records of its internal stream, and its tables' keys and values.

The shop stream (``<app id>-shop-verdicts``) carries, keyed by shop, every verdict as it went to
the verdicts topic (Avro, prefixed ``V`` and its action's initial) and the sweep's ticks
(``T``): a day may have left some shop's window. ccc-guard alone writes it, to the shop's
partition by its own partitioner, so which partitioner placed the listings does not matter here.

Tables, both on the shop's partition:
- shop-risk: shop NUL kind day-or-id → a small document. Kinds: ``D<day>`` one day's counts,
  ``L<listing>`` / ``C<certificate>`` the last day that listing / certificate offended,
  ``V<verdict id>`` the day a verdict was counted (so a repeated verdict counts once). Every key
  of a shop shares its prefix, and days are fixed-width, so a scan finds a shop's window in order.
- shop-summaries: shop → ``ShopSummary``.

Values carry their format version (``"fv"``), as the listing and certificate state do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import orjson

from streams.errors import InvalidRecordError
from streams.model import VerdictAction
from streams.shop_risk import DayCounts, ShopSummary
from streams.state_codec import load_document

FORMAT_VERSION = 1
_VERDICT_MESSAGE, _TICK_MESSAGE = b"V", b"T"
DAY, LISTING, CERTIFICATE, VERDICT = b"D", b"L", b"C", b"V"
_ACTION_CODES = {action: str(action)[:1].encode() for action in VerdictAction}
_ACTIONS = {code: action for action, code in _ACTION_CODES.items()}


# -- the stream ---------------------------------------------------------------------------


def verdict_message(action: VerdictAction, avro: bytes) -> bytes:
    """A verdict's record: ``V``, its action's initial (so the shop side skips an ALLOW or a
    RESTORE without decoding it), then its Avro bytes."""
    return _VERDICT_MESSAGE + _ACTION_CODES[action] + avro


def tick_message() -> bytes:
    return _TICK_MESSAGE


def decode_message(value: bytes) -> tuple[VerdictAction, bytes] | None:
    """The verdict's action and Avro bytes, or None for a tick."""
    kind = value[:1]
    if kind == _VERDICT_MESSAGE and value[1:2] in _ACTIONS:
        return _ACTIONS[value[1:2]], value[2:]
    if kind == _TICK_MESSAGE and len(value) == 1:
        return None
    raise InvalidRecordError(f"not a shop stream record (starts with {value[:8]!r})")


# -- keys ---------------------------------------------------------------------------------


def shop_prefix(shop_key: bytes) -> bytes:
    return shop_key + b"\x00"


def kind_prefix(shop_key: bytes, kind: bytes) -> bytes:
    return shop_key + b"\x00" + kind


def day_key(shop_key: bytes, day: int) -> bytes:
    return kind_prefix(shop_key, DAY) + b"%07d" % day


def item_key(shop_key: bytes, kind: bytes, item: str) -> bytes:
    return kind_prefix(shop_key, kind) + item.encode()


def item_of(shop_key: bytes, kind: bytes, key: bytes) -> str:
    return key[len(kind_prefix(shop_key, kind)) :].decode()


def kind_of(shop_key: bytes, key: bytes) -> bytes:
    start = len(shop_prefix(shop_key))
    return key[start : start + 1]


# -- values -------------------------------------------------------------------------------


def encode_day(counts: DayCounts) -> bytes:
    return orjson.dumps(
        {
            "fv": FORMAT_VERSION,
            "b": counts.blocks,
            "t": counts.takedowns,
            "r": [[action, reason, n] for (action, reason), n in sorted(counts.by_reason.items())],
            "nl": counts.newest_listings,
            "nc": counts.newest_certificates,
        }
    )


def decode_day(data: bytes) -> DayCounts:
    doc = load_document(data, "shop day counts", FORMAT_VERSION)
    return DayCounts(
        blocks=doc["b"],
        takedowns=doc["t"],
        by_reason={(action, reason): n for action, reason, n in doc["r"]},
        newest_listings=doc["nl"],
        newest_certificates=doc["nc"],
    )


def encode_day_mark(day: int) -> bytes:
    """The value of an ``L``, ``C`` or ``V`` key: a day."""
    return orjson.dumps({"fv": FORMAT_VERSION, "d": day})


def decode_day_mark(data: bytes) -> int:
    day: int = load_document(data, "shop day mark", FORMAT_VERSION)["d"]
    return day


def encode_summary(summary: ShopSummary) -> bytes:
    return orjson.dumps(
        {
            "fv": FORMAT_VERSION,
            "o": summary.oldest_day,
            "a": summary.alerting,
            "x": summary.crossings,
            "ao": summary.alert_offset,
            "la": summary.last_alert,
        }
    )


def decode_summary(data: bytes) -> ShopSummary:
    doc = load_document(data, "shop summary", FORMAT_VERSION)
    return ShopSummary(
        oldest_day=doc["o"],
        alerting=doc["a"],
        crossings=doc["x"],
        alert_offset=doc["ao"],
        last_alert=doc["la"],
    )


# -- reading a shop's keys ----------------------------------------------------------------


def days_of(items: Iterable[tuple[bytes, bytes]], shop_key: bytes) -> dict[int, DayCounts]:
    """The shop's day counts, from the items of a scan of its ``D`` prefix."""
    prefix = kind_prefix(shop_key, DAY)
    return {int(key[len(prefix) :]): decode_day(value) for key, value in items}


def last_days_of(
    items: Iterable[tuple[bytes, bytes]], shop_key: bytes, kind: bytes
) -> Iterator[tuple[str, int]]:
    """(listing or certificate, its last offending day), from a scan of its kind's prefix."""
    for key, value in items:
        yield item_of(shop_key, kind, key), decode_day_mark(value)
