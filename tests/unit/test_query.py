"""The query reader over the join's own state (in process: dict tables, real handlers), and the
pure parts of the query API and CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localkafka.ports import free_port
from streams import query_cli
from streams.errors import PartitionsMovedError, QueryFailedError
from streams.model import Verdict, VerdictAction, VerdictReason, VerdictTrigger
from streams.query import (
    Claimer,
    QueryReader,
    ShopSource,
    iso_day,
    merge_claimers,
    missing_partitions,
)
from streams.query_api import bearer_token_matches, page_arguments
from streams.shop_risk import DAY_MS, Shop
from tests.builders import cert_no, listing_event, status_change
from tests.inprocess import SHOP_THRESHOLDS, InProcessJoin, InProcessShops, dict_scan

TABLES = ("listings", "listing-claims", "certificates", "shop-summaries")


def _reader(
    join: InProcessJoin,
    active: dict[str, frozenset[int]] | None = None,
    shops: InProcessShops | None = None,
) -> QueryReader:
    everything = frozenset(range(join.partitions))
    chosen = active or {}
    shops = shops or InProcessShops()

    def partitions_of(name: str) -> Callable[[], frozenset[int]]:
        return lambda: chosen.get(name, everything)

    return QueryReader(
        join.listings,
        join.claims,
        join.certificates,
        dict_scan,
        {name: partitions_of(name) for name in TABLES},
        join.certificate_side.partition_of,
        ShopSource(
            shops.risk,
            shops.summaries,
            lambda key: 0,  # InProcessShops holds one partition
            SHOP_THRESHOLDS,
            lambda: shops.now,
        ),
    )


def _join_with(certs: dict[str, str], listings: dict[str, list[str]]) -> InProcessJoin:
    join = InProcessJoin()
    for cert, status in certs.items():
        join.publish_certificate(status_change(cert))
        if status != "VALID":
            join.publish_certificate(status_change(cert, status, version=2))
    join.run_sync()
    for listing, claimed in listings.items():
        join.publish_listing(listing_event(listing, claimed, model="A-65"))
    join.run_sync()
    return join


def test_a_listing_answer_says_why_with_the_evidence_and_the_verdicts_sent() -> None:
    good, revoked = cert_no(), cert_no()
    join = _join_with({good: "VALID", revoked: "REVOKED"}, {"L-1": [good, revoked]})

    document, covered = _reader(join).listing("L-1")

    assert covered == frozenset(range(join.partitions))
    assert document is not None
    [verdict] = [v for v in join.verdicts if v.listing_id == "L-1"]
    assert document["status"] == "BLOCKED"
    assert document["reasons"] == [str(r) for r in verdict.reasons]
    assert document["failing_certs"] == [revoked]
    assert [v["verdict_id"] for v in document["verdicts"]] == [verdict.verdict_id]
    evidence = {e["cert_no"]: e for e in document["certificates"]}
    assert evidence[revoked]["status"] == "REVOKED" and evidence[revoked]["version"] == 2
    assert evidence[good]["status"] == "VALID" and evidence[good]["known"] is True
    [seen] = [e.view for e in verdict.evidence if e.cert_no == good]
    assert seen is not None
    assert evidence[good]["valid_until"] == iso_day(seen.expires_on)  # as people read dates
    assert dt.date.fromisoformat(evidence[good]["valid_until"]) > dt.date.today()


def test_a_takedown_shows_in_the_history_after_the_listing_event_verdict() -> None:
    cert = cert_no()
    join = _join_with({cert: "VALID"}, {"L-2": [cert]})
    join.publish_certificate(status_change(cert, "SUSPENDED", version=2))
    join.run_sync()

    document, _ = _reader(join).listing("L-2")

    assert document is not None and document["status"] == "BLOCKED"
    actions = [v["action"] for v in document["verdicts"]]
    assert actions == [str(VerdictAction.ALLOW), str(VerdictAction.TAKEDOWN)]
    assert [v.verdict_id for v in join.verdicts] == [v["verdict_id"] for v in document["verdicts"]]
    assert document["reasons"] == ["CERTIFICATE_SUSPENDED"]


def test_a_listing_on_a_partition_this_worker_is_not_active_for_is_not_its_answer() -> None:
    cert = cert_no()
    join = _join_with({cert: "VALID"}, {"L-3": [cert]})
    partition = join.partitioner(b"L-3", join.partitions)
    others = frozenset(range(join.partitions)) - {partition}

    document, covered = _reader(join, {"listings": others}).listing("L-3")

    assert document is None and covered == others
    assert _reader(join).listing("no-such-listing")[0] is None


def test_a_certificate_answer_counts_its_claimers_on_every_partition() -> None:
    cert = cert_no()
    listings = {f"L-{i}": [cert] for i in range(30)}
    join = _join_with({cert: "VALID"}, listings)

    document, claimed, covered = asyncio.run(_reader(join).certificate(cert))

    assert claimed == 30
    assert document is not None and document["status"] == "VALID"
    assert document["version"] == 1 and document["models"] == ["a-100", "a-65"]
    assert covered["listing-claims"] == frozenset(range(join.partitions))


def test_claimers_come_in_id_order_a_page_at_a_time_without_gaps_or_repeats() -> None:
    cert = cert_no()
    ids = sorted(f"L-{i:03d}" for i in range(37))
    join = _join_with({cert: "VALID"}, {i: [cert] for i in ids})
    reader = _reader(join)

    seen: list[str] = []
    after = ""
    while True:
        page, _ = asyncio.run(reader.claimers(cert, after, 10))
        seen += [c.listing_id for c in page]
        assert all(c.status == "LIVE" for c in page)
        assert all(c.partition == join.partitioner(c.listing_id.encode(), 4) for c in page)
        if len(page) < 10:
            break
        after = page[-1].listing_id
    assert seen == ids


def test_claimers_of_the_partitions_held_elsewhere_are_left_to_their_owner() -> None:
    cert = cert_no()
    join = _join_with({cert: "VALID"}, {f"L-{i}": [cert] for i in range(20)})
    mine = frozenset({0, 1})

    page, covered = asyncio.run(_reader(join, {"listing-claims": mine}).claimers(cert, "", 100))

    assert covered == mine and page
    assert {c.partition for c in page} <= mine
    everywhere, _ = asyncio.run(_reader(join).claimers(cert, "", 100))
    assert [c for c in everywhere if c.partition in mine] == page


def test_partitions_that_move_while_a_query_reads_make_it_fail_not_answer() -> None:
    cert = cert_no()
    join = _join_with({cert: "VALID"}, {f"L-{i}": [cert] for i in range(5)})
    answers = iter([frozenset({0, 1, 2, 3}), frozenset({0, 1})])
    reader = _reader(join)
    reader.active = {**reader.active, "listing-claims": lambda: next(answers)}

    with pytest.raises(PartitionsMovedError):
        asyncio.run(reader.claimers(cert, "", 100))


def test_gathered_answers_are_whole_only_when_they_cover_each_partition_once() -> None:
    assert missing_partitions([[0, 1], [2, 3]], 4) is None
    assert missing_partitions([[0, 1], [3]], 4) == {2}
    assert missing_partitions([[0, 1, 2], [2, 3]], 4) == {2}  # two owners: mid-rebalance
    assert missing_partitions([[0, 1, 2, 3, 4]], 4) == {4}


def test_claimer_pages_merge_in_id_order_up_to_the_limit() -> None:
    a = [Claimer("a", 0, "LIVE"), Claimer("c", 0, "LIVE")]
    b = [Claimer("b", 1, "BLOCKED"), Claimer("d", 1, "LIVE")]
    assert [c.listing_id for c in merge_claimers([a, b], 3)] == ["a", "b", "c"]


def test_only_the_configured_bearer_token_is_let_in() -> None:
    token = b"s3cret-token-0123456789"
    assert bearer_token_matches("Bearer s3cret-token-0123456789", token)
    assert bearer_token_matches("bearer s3cret-token-0123456789", token)  # schemes ignore case
    assert not bearer_token_matches(
        "Bearer \udcff", token
    )  # undecodable bytes, as aiohttp has them
    assert not bearer_token_matches("Basic s3cret-token-0123456789", token)
    assert not bearer_token_matches("Bearer s3cret-token-012345678", token)
    assert not bearer_token_matches("s3cret-token-0123456789", token)
    assert not bearer_token_matches(None, token)


def test_page_arguments_are_checked() -> None:
    assert page_arguments({}) == ("", 100)
    assert page_arguments({"after": "L-9", "limit": "5"}) == ("L-9", 5)
    assert page_arguments({"limit": "0"}) is None
    assert page_arguments({"limit": "1001"}) is None
    assert page_arguments({"limit": "ten"}) is None


# -- the CLI, against answers shaped as the API gives them ------------------------------------


def _listing_answer(join: InProcessJoin, listing: str) -> dict[str, Any]:
    document, _ = _reader(join).listing(listing)
    assert document is not None
    return {**document, "worker": "http://w1:6066", "owner": "http://w2:6066"}


def test_explain_prints_a_table_for_a_person_and_exits_0_when_found_and_1_when_not() -> None:
    good, revoked = cert_no(), cert_no()
    join = _join_with({good: "VALID", revoked: "REVOKED"}, {"L-9": [good, revoked]})
    answers = {"/v1/listings/L-9": (200, _listing_answer(join, "L-9"))}

    def fetch(path: str) -> tuple[int, dict[str, Any]]:
        return answers.get(path, (404, {"error": "not found"}))

    out = io.StringIO()
    assert query_cli.explain(fetch, "L-9", out) == query_cli.EXIT_FOUND
    text = out.getvalue()
    assert "status    BLOCKED" in text
    assert "CERTIFICATE_REVOKED" in text and revoked in text and good in text
    assert "held by http://w2:6066" in text
    [verdict] = join.verdicts
    assert verdict.verdict_id in text

    out = io.StringIO()
    assert query_cli.explain(fetch, "L-unknown", out) == query_cli.EXIT_NOT_FOUND
    assert "not found" in out.getvalue()


def test_claimers_follows_the_pages_to_the_end() -> None:
    cert = cert_no()
    ids = sorted(f"L-{i:02d}" for i in range(12))
    join = _join_with({cert: "VALID"}, {i: [cert] for i in ids})
    reader = _reader(join)
    asked: list[str] = []

    def fetch(path: str) -> tuple[int, dict[str, Any]]:
        asked.append(path)
        if path == f"/v1/certificates/{cert}":
            doc, claimed, _ = asyncio.run(reader.certificate(cert))
            assert doc is not None
            return 200, {**doc, "claimed_by": claimed}
        query = dict(p.split("=") for p in path.split("?")[1].split("&"))
        page, _ = asyncio.run(reader.claimers(cert, query["after"], int(query["limit"])))
        next_after = page[-1].listing_id if len(page) == int(query["limit"]) else None
        return 200, {"listings": [c.as_json() for c in page], "next_after": next_after}

    out = io.StringIO()
    assert query_cli.claimers(fetch, cert, out, page=5) == query_cli.EXIT_FOUND
    text = out.getvalue()
    assert "claimed by  12 listing(s)" in text
    assert [i for i in ids if i in text] == ids
    assert len(asked) == 1 + 3  # the certificate, then pages of 5, 5 and 2


def _takedown(listing: str, at: int, shop: str = "S-7") -> Verdict:
    return Verdict(
        verdict_id=f"v-{listing}",
        listing_id=listing,
        platform="jd",
        shop_id=shop,
        action=VerdictAction.TAKEDOWN,
        reasons=(VerdictReason.CERTIFICATE_SUSPENDED,),
        cert_numbers=("C-1",),
        failing_certs=("C-1",),
        trigger=VerdictTrigger.CERTIFICATE_CHANGE,
        trigger_id="C-1@2",
        event_time=at,
        decided_at=at,
    )


def test_a_shop_answer_is_its_window_as_of_today_and_its_latest_alert() -> None:
    shops = InProcessShops()
    shops.feed(*(_takedown(f"L-{n}", shops.now - n * DAY_MS) for n in range(3)))
    reader = _reader(InProcessJoin(), shops=shops)
    document, covered = reader.shop(Shop("jd", "S-7"))
    assert covered == frozenset(range(4))
    assert document is not None
    assert (document["takedowns"], document["distinct_listings"]) == (3, 3)
    assert document["alerting"] is True and document["crossings"] == 1
    assert document["last_alert"]["kind"] == "RAISED"
    assert document["sample_listing_ids"] == ["L-0", "L-1", "L-2"]  # the latest first
    assert reader.shop(Shop("jd", "S-none"))[0] is None
    held_elsewhere = _reader(InProcessJoin(), {"shop-summaries": frozenset({1})}, shops)
    assert held_elsewhere.shop(Shop("jd", "S-7")) == (None, frozenset({1}))
    shops.days_later(28)  # L-2's day has left the window; the sweep has not run yet
    document, _ = reader.shop(Shop("jd", "S-7"))
    assert document is not None and document["takedowns"] == 2

    out = io.StringIO()
    answers = {"/v1/shops/jd/S-7": (200, document)}

    def fetch(path: str) -> tuple[int, dict[str, Any]]:
        return answers.get(path, (404, {"error": "no BLOCK or TAKEDOWN in the window"}))

    assert query_cli.shop(fetch, "jd", "S-7", out) == query_cli.EXIT_FOUND
    text = out.getvalue()
    assert "takedowns   2 (alert at 3)" in text and "TAKEDOWN  CERTIFICATE_SUSPENDED  2" in text
    out = io.StringIO()
    assert query_cli.shop(fetch, "jd", "S-none", out) == query_cli.EXIT_NOT_FOUND


def test_a_refused_token_is_an_error_exit_not_a_not_found() -> None:
    def fetch(path: str) -> tuple[int, dict[str, Any]]:
        return 401, {"error": "unauthorized"}

    with pytest.raises(QueryFailedError, match="token"):
        query_cli.explain(fetch, "L-1", io.StringIO())


def test_the_cli_exits_2_when_it_cannot_ask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert query_cli.main(["explain", "L-1"], {}) == query_cli.EXIT_FAILED
    assert "CCC_QUERY_TOKEN_FILE" in capsys.readouterr().err
    token_file = tmp_path / "token"
    token_file.write_text("a-long-enough-query-token\n")
    env = {"CCC_QUERY_TOKEN_FILE": str(token_file)}
    closed = f"http://127.0.0.1:{free_port()}"
    assert query_cli.main(["explain", "L-1", "--url", closed], env) == query_cli.EXIT_FAILED
    assert "cannot reach" in capsys.readouterr().err
    no_scheme = ["claimers", "2020010907000001", "--url", "127.0.0.1:6066"]
    assert query_cli.main(no_scheme, env) == query_cli.EXIT_FAILED
    assert query_cli.main(["explain", "L-1"], {"CCC_NO_SUCH": "1"}) == query_cli.EXIT_FAILED
