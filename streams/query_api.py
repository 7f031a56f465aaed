"""The query API on the workers' web server: read-only answers for compliance staff.

- ``GET /v1/listings/{listing_id}``: LIVE, BLOCKED, PENDING or DELISTED, why, the certificates
  as the decision saw them, the latest verdicts.
- ``GET /v1/certificates/{cert_no}``: status, version, valid-until, reason of the last change,
  and how many listings claim it.
- ``GET /v1/certificates/{cert_no}/listings?after=&limit=``: the claimers in listing id order,
  a page at a time, streamed.
- ``GET /v1/shops/{platform}/{shop_id}``: the shop's BLOCKs and TAKEDOWNs over its window as of
  today, whether it is alerted, and its latest alert.

Off unless ``CCC_QUERY_TOKEN_FILE`` names a token; every request needs
``Authorization: Bearer <token>``. Every response names the worker that answered
(``X-CCC-Worker`` and ``worker``) and, for a listing, the worker holding it (``owner``).

Routing. Faust's router finds a table key's owner by hashing the key with the producer's
partitioner. A listing's partition was chosen by the platform's producer (CRC32, FNV-1a,
murmur2: ccc-guard cannot know which), so that would ask the wrong worker. Instead the worker
taking a request asks the owner of every partition, found in Faust's router metadata (the
group's assignment), with a local-only request (``X-CCC-Scope: local``), and gathers. Each
worker answers from its active partitions and names them; a gathered answer is given only if
those cover every partition exactly once. Otherwise a rebalance is moving partitions, and the
answer is 503 with Retry-After, never a listing wrongly "not found".
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from streams.errors import QueryUnavailableError
from streams.faust_adapter import is_ready, table_owners
from streams.query import MAX_PAGE, Claimer, QueryReader, merge_claimers, missing_partitions
from streams.shop_risk import Shop
from streams.validation import Limits, is_acceptable_id

log = logging.getLogger(__name__)

SCOPE_HEADER = "X-CCC-Scope"
WORKER_HEADER = "X-CCC-Worker"
RETRY_AFTER_S = 2
DEFAULT_PAGE = 100
_JSON = "application/json"

Answer = tuple[int, dict[str, object]]


def bearer_token_matches(header: str | None, token: bytes) -> bool:
    """Constant-time, so the comparison's time tells nothing about the token."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


def page_arguments(query: Mapping[str, str]) -> tuple[str, int] | None:
    """``after`` and ``limit`` of a claimers request, or None when they make no sense."""
    after = query.get("after", "")
    try:
        limit = int(query.get("limit", DEFAULT_PAGE))
    except ValueError:
        return None
    if not 1 <= limit <= MAX_PAGE or len(after) > 1000:
        return None
    return after, limit


def _same_worker(a: str, b: str) -> bool:
    ua, ub = URL(a), URL(b)
    return (ua.host, ua.port) == (ub.host, ub.port)


def _shaped(answer: object, keys: tuple[str, ...], tables: tuple[str, ...]) -> bool:
    """Whether a peer's local answer has the fields this worker reads (another version's
    answer may not: then the question waits for the upgrade to finish)."""
    if not isinstance(answer, dict) or not all(key in answer for key in keys):
        return False
    covered = answer.get("covered")
    return isinstance(covered, dict) and all(isinstance(covered.get(t), list) for t in tables)


@dataclass(frozen=True, slots=True)
class ClaimersPage:
    """A gathered page, written out after the question's timeout: a response whose head is
    sent cannot become a 504 any more."""

    cert_no: str
    claimers: list[Claimer]
    limit: int


class QueryAPI:
    def __init__(
        self,
        app: Any,
        reader: QueryReader,
        token: bytes,
        timeout_s: float,
        partitions: Mapping[str, int],
        limits: Limits,
    ) -> None:
        self.app, self.reader, self.token, self.timeout_s = app, reader, token, timeout_s
        self.partitions, self.limits = partitions, limits
        # A peer gets less time than the question, so a dead one is a 503, not a 504.
        self.peer_timeout = aiohttp.ClientTimeout(total=timeout_s * 0.8)

    @property
    def worker(self) -> str:
        return str(self.app.conf.canonical_url)

    def install(self) -> None:
        api = self

        async def query_listing(view: Any, request: web.Request, listing_id: str) -> Any:
            return await api._serve(request, functools.partial(api._listing, request, listing_id))

        async def query_certificate(view: Any, request: web.Request, cert_no: str) -> Any:
            return await api._serve(
                request, lambda local: api._certificate(request, cert_no, local)
            )

        async def query_claimers(view: Any, request: web.Request, cert_no: str) -> Any:
            return await api._serve(request, functools.partial(api._claimers, request, cert_no))

        self.app.page("/v1/listings/{listing_id}", name="query-listing")(query_listing)
        self.app.page("/v1/certificates/{cert_no}", name="query-certificate")(query_certificate)

        async def query_shop(view: Any, request: web.Request, platform: str, shop_id: str) -> Any:
            return await api._serve(
                request, functools.partial(api._shop, request, Shop(platform, shop_id))
            )

        self.app.page("/v1/certificates/{cert_no}/listings", name="query-claimers")(query_claimers)
        self.app.page("/v1/shops/{platform}/{shop_id}", name="query-shop")(query_shop)

    # -- the frame every request goes through ------------------------------------------------

    async def _serve(
        self, request: web.Request, answer: Callable[[bool], Awaitable[Answer | ClaimersPage]]
    ) -> web.StreamResponse:
        if request.method != "GET":  # Faust's views answer HEAD with GET's handler
            return web.Response(status=405, headers={"Allow": "GET"})
        if not bearer_token_matches(request.headers.get("Authorization"), self.token):
            # Nothing about the deployment, not even which worker, before the token.
            return web.Response(
                body=orjson.dumps({"error": "unauthorized"}),
                status=401,
                content_type=_JSON,
                headers={"WWW-Authenticate": "Bearer"},
            )
        local = request.headers.get(SCOPE_HEADER) == "local"
        try:
            if not is_ready(self.app):
                raise QueryUnavailableError("this worker is rebalancing or recovering")
            async with asyncio.timeout(self.timeout_s):
                result = await answer(local)
        except QueryUnavailableError as exc:
            log.info("query %s: 503, %s", request.path, exc)
            return self._json(
                503,
                {"error": "rebalancing, retry", "retry_after_s": RETRY_AFTER_S},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        except TimeoutError:
            log.warning("query %s: timed out after %.1f s", request.path, self.timeout_s)
            return self._json(504, {"error": "timed out"})
        if isinstance(result, ClaimersPage):
            return await self._stream_page(request, result)
        status, body = result
        return self._json(status, body)

    def _json(
        self, status: int, body: dict[str, object], headers: Mapping[str, str] | None = None
    ) -> web.Response:
        body = {**body, "worker": self.worker}
        return web.Response(
            body=orjson.dumps(body),
            status=status,
            content_type=_JSON,
            headers={WORKER_HEADER: self.worker, **(headers or {})},
        )

    def _known(self, value: str) -> bool:
        return is_acceptable_id(value, self.limits)

    # -- the questions -----------------------------------------------------------------------

    async def _listing(self, request: web.Request, listing_id: str, local: bool) -> Answer:
        if not self._known(listing_id):
            return 404, {"error": "not found"}
        document, covered = self.reader.listing(listing_id)
        if local:
            return 200, {"listing": document, "covered": {"listings": sorted(covered)}}
        # Every owner is asked even when this worker holds the listing: only the coverage of
        # all answers shows a partition two workers both think is theirs (one of them stale).
        answers = [(self.worker, document, covered)]
        for peer, answer in await self._ask_peers(request, ("listing",), ("listings",)):
            answers.append((peer, answer["listing"], answer["covered"]["listings"]))
        self._check_coverage("listings", [parts for _, _, parts in answers])
        holders = [(peer, doc) for peer, doc, _ in answers if doc is not None]
        if len(holders) > 1:
            raise QueryUnavailableError(f"listing held by {len(holders)} workers")
        if not holders:
            return 404, {"error": "not found"}
        [(owner, held)] = holders
        return 200, {**held, "owner": owner}

    async def _certificate(self, request: web.Request, cert_no: str, local: bool) -> Answer:
        if not self._known(cert_no):
            return 404, {"error": "not found"}
        document, claimed_by, covered = await self.reader.certificate(cert_no)
        mine: dict[str, Any] = {
            "certificate": document,
            "claimed_by": claimed_by,
            "covered": {table: sorted(parts) for table, parts in covered.items()},
        }
        if local:
            return 200, mine
        tables = ("certificates", "listing-claims")
        peers = await self._ask_peers(request, ("certificate", "claimed_by"), tables)
        answers = [mine, *(answer for _, answer in peers)]
        self._check_coverage("listing-claims", [a["covered"]["listing-claims"] for a in answers])
        partition = self.reader.certificate_partition(cert_no.encode())
        holders = sum(partition in a["covered"]["certificates"] for a in answers)
        if holders != 1:
            raise QueryUnavailableError(f"certificate partition {partition} held by {holders}")
        claimed = sum(int(a["claimed_by"]) for a in answers)
        document = next((a["certificate"] for a in answers if a["certificate"]), None)
        if document is None and claimed == 0:
            return 404, {"error": "not found"}
        if document is None:  # claimed, but the authority never published it
            document = {"cert_no": cert_no, "known": False}
        return 200, {**document, "claimed_by": claimed}

    async def _claimers(
        self, request: web.Request, cert_no: str, local: bool
    ) -> Answer | ClaimersPage:
        arguments = page_arguments(request.query)
        if arguments is None:
            return 400, {"error": f"after: at most 1000 characters; limit: 1-{MAX_PAGE}"}
        if not self._known(cert_no):
            return 404, {"error": "not found"}
        after, limit = arguments
        page, covered = await self.reader.claimers(cert_no, after, limit)
        if local:
            return 200, {
                "listings": [c.as_json() for c in page],
                "covered": {"listing-claims": sorted(covered)},
            }
        pages, coverage = [page], [covered]
        for peer, answer in await self._ask_peers(request, ("listings",), ("listing-claims",)):
            coverage.append(answer["covered"]["listing-claims"])
            try:
                pages.append([Claimer(**c) for c in answer["listings"]])
            except TypeError:
                raise QueryUnavailableError(f"worker {peer} answered in another shape") from None
        self._check_coverage("listing-claims", coverage)
        return ClaimersPage(cert_no, merge_claimers(pages, limit), limit)

    async def _shop(self, request: web.Request, shop: Shop, local: bool) -> Answer:
        if not (self._known(shop.platform) and self._known(shop.shop_id)):
            return 404, {"error": "not found"}
        document, covered = self.reader.shop(shop)
        mine: dict[str, Any] = {"shop": document, "covered": {"shop-summaries": sorted(covered)}}
        if local:
            return 200, mine
        peers = await self._ask_peers(request, ("shop",), ("shop-summaries",))
        answers = [mine, *(answer for _, answer in peers)]
        # The shop's partition is ccc-guard's own choice: only its holder need answer.
        partition = self.reader.shops.partition_of(shop.key())
        holders = sum(partition in a["covered"]["shop-summaries"] for a in answers)
        if holders != 1:
            raise QueryUnavailableError(f"shop partition {partition} held by {holders}")
        document = next((a["shop"] for a in answers if a["shop"]), None)
        if document is None:
            return 404, {"error": "no BLOCK or TAKEDOWN in the window"}
        return 200, document

    async def _stream_page(self, request: web.Request, page: ClaimersPage) -> web.StreamResponse:
        """One JSON document written claimer by claimer: a large page is never one buffer."""
        response = web.StreamResponse(
            status=200, headers={WORKER_HEADER: self.worker, "Content-Type": _JSON}
        )
        await response.prepare(request)
        head = {"cert_no": page.cert_no, "worker": self.worker}
        await response.write(orjson.dumps(head)[:-1] + b',"listings":[')
        for n, claimer in enumerate(page.claimers):
            await response.write((b"," if n else b"") + orjson.dumps(claimer.as_json()))
        full = len(page.claimers) == page.limit
        next_after = page.claimers[-1].listing_id if full else None
        await response.write(b'],"next_after":' + orjson.dumps(next_after) + b"}")
        await response.write_eof()
        return response

    # -- gathering from the other workers ----------------------------------------------------

    async def _ask_peers(
        self, request: web.Request, keys: tuple[str, ...], tables: tuple[str, ...]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every other worker active for a partition of ``tables``, asked the same question for
        its own partitions only; (worker, answer) of each, each answer holding ``keys`` and
        the partitions of ``tables`` it covered. The first that fails cancels the others."""
        peers = sorted(
            {
                url
                for table in tables
                for url, partitions in table_owners(self.app, table).items()
                if partitions and not _same_worker(url, self.worker)
            }
        )
        try:
            async with asyncio.TaskGroup() as group:
                asked = [group.create_task(self._ask(peer, request)) for peer in peers]
        except* QueryUnavailableError as failed:
            raise failed.exceptions[0] from None
        answers = [task.result() for task in asked]
        for peer, answer in answers:
            if not _shaped(answer, keys, tables):
                raise QueryUnavailableError(f"worker {peer} answered in another shape")
        return answers

    async def _ask(self, peer: str, request: web.Request) -> tuple[str, Any]:
        # The path as it came, still encoded: a listing id with a "/" stays one segment.
        url = URL(peer).join(request.rel_url)
        headers = {
            SCOPE_HEADER: "local",
            "Authorization": request.headers.get("Authorization", ""),
        }
        try:
            async with self.app.http_client.get(
                url, headers=headers, timeout=self.peer_timeout
            ) as response:
                if response.status == 401:
                    log.warning(
                        "worker %s refused the query token: is its token file the same?", peer
                    )
                if response.status != 200:
                    raise QueryUnavailableError(f"worker {peer} answered {response.status}")
                return peer, orjson.loads(await response.read())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise QueryUnavailableError(f"worker {peer} did not answer: {exc!r}") from None

    def _check_coverage(self, table: str, covered: list[Any]) -> None:
        wrong = missing_partitions(covered, self.partitions[table])
        if wrong:
            raise QueryUnavailableError(f"{table} partitions {sorted(wrong)} not answered once")
