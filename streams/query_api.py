"""The query API on the workers' web server: read-only answers for compliance staff.

- ``GET /v1/listings/{listing_id}``: LIVE, BLOCKED, PENDING or DELISTED, why, the certificates
  as the decision saw them, the latest verdicts.
- ``GET /v1/certificates/{cert_no}``: status, version, valid-until, reason of the last change,
  and how many listings claim it.
- ``GET /v1/certificates/{cert_no}/listings?after=&limit=``: the claimers in listing id order,
  a page at a time, streamed.

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
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from streams.errors import QueryUnavailableError
from streams.faust_adapter import is_ready, table_owners
from streams.query import MAX_PAGE, Claimer, QueryReader, merge_claimers, missing_partitions
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
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token)


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

    @property
    def worker(self) -> str:
        return str(self.app.conf.canonical_url)

    def install(self) -> None:
        api = self

        async def query_listing(view: Any, request: web.Request, listing_id: str) -> Any:
            return await api._serve(request, lambda local: api._listing(request, listing_id, local))

        async def query_certificate(view: Any, request: web.Request, cert_no: str) -> Any:
            return await api._serve(
                request, lambda local: api._certificate(request, cert_no, local)
            )

        async def query_claimers(view: Any, request: web.Request, cert_no: str) -> Any:
            return await api._serve(request, lambda local: api._claimers(request, cert_no, local))

        self.app.page("/v1/listings/{listing_id}", name="query-listing")(query_listing)
        self.app.page("/v1/certificates/{cert_no}", name="query-certificate")(query_certificate)
        self.app.page("/v1/certificates/{cert_no}/listings", name="query-claimers")(query_claimers)

    # -- the frame every request goes through ------------------------------------------------

    async def _serve(
        self, request: web.Request, answer: Callable[[bool], Awaitable[Answer | web.StreamResponse]]
    ) -> web.StreamResponse:
        if not bearer_token_matches(request.headers.get("Authorization"), self.token):
            return self._json(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
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
        if isinstance(result, web.StreamResponse):
            return result
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

    # -- the three questions -----------------------------------------------------------------

    async def _listing(self, request: web.Request, listing_id: str, local: bool) -> Answer:
        if not self._known(listing_id):
            return 404, {"error": "not found"}
        document, covered = self.reader.listing(listing_id)
        if local:
            return 200, {"listing": document, "covered": {"listings": sorted(covered)}}
        if document is not None:
            return 200, {**document, "owner": self.worker}
        coverage = [covered]
        for peer, answer in await self._ask_peers(request, "listings"):
            coverage.append(answer["covered"]["listings"])
            if answer["listing"] is not None:
                return 200, {**answer["listing"], "owner": peer}
        self._check_coverage("listings", coverage)
        return 404, {"error": "not found"}

    async def _certificate(self, request: web.Request, cert_no: str, local: bool) -> Answer:
        if not self._known(cert_no):
            return 404, {"error": "not found"}
        document, claimed_by, covered = await self.reader.certificate(cert_no)
        mine: dict[str, object] = {
            "certificate": document,
            "claimed_by": claimed_by,
            "covered": {table: sorted(parts) for table, parts in covered.items()},
        }
        if local:
            return 200, mine
        answers = [mine, *(answer for _, answer in await self._ask_peers(request, *covered))]
        self._check_coverage("listing-claims", [a["covered"]["listing-claims"] for a in answers])
        partition = self.reader.certificate_partition(cert_no.encode())
        holders = sum(partition in a["covered"]["certificates"] for a in answers)
        if holders != 1:
            raise QueryUnavailableError(f"certificate partition {partition} held by {holders}")
        claimed = sum(a["claimed_by"] for a in answers)
        document = next((a["certificate"] for a in answers if a["certificate"]), None)
        if document is None and claimed == 0:
            return 404, {"error": "not found"}
        if document is None:  # claimed, but the authority never published it
            document = {"cert_no": cert_no, "known": False}
        return 200, {**document, "claimed_by": claimed}

    async def _claimers(
        self, request: web.Request, cert_no: str, local: bool
    ) -> Answer | web.StreamResponse:
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
        for _, answer in await self._ask_peers(request, "listing-claims"):
            coverage.append(answer["covered"]["listing-claims"])
            pages.append([Claimer(**c) for c in answer["listings"]])
        self._check_coverage("listing-claims", coverage)
        return await self._stream_page(request, cert_no, merge_claimers(pages, limit), limit)

    async def _stream_page(
        self, request: web.Request, cert_no: str, page: list[Claimer], limit: int
    ) -> web.StreamResponse:
        """One JSON document written claimer by claimer: a large page is never one buffer."""
        response = web.StreamResponse(
            status=200, headers={WORKER_HEADER: self.worker, "Content-Type": _JSON}
        )
        await response.prepare(request)
        head = {"cert_no": cert_no, "worker": self.worker}
        await response.write(orjson.dumps(head)[:-1] + b',"listings":[')
        for n, claimer in enumerate(page):
            await response.write((b"," if n else b"") + orjson.dumps(claimer.as_json()))
        next_after = page[-1].listing_id if len(page) == limit else None
        await response.write(b'],"next_after":' + orjson.dumps(next_after) + b"}")
        await response.write_eof()
        return response

    # -- gathering from the other workers ----------------------------------------------------

    async def _ask_peers(
        self, request: web.Request, *tables: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every other worker active for a partition of ``tables``, asked the same question for
        its own partitions only; (worker, answer) of each."""
        peers = sorted(
            {
                url
                for table in tables
                for url, partitions in table_owners(self.app, table).items()
                if partitions and not _same_worker(url, self.worker)
            }
        )
        return list(await asyncio.gather(*(self._ask(peer, request) for peer in peers)))

    async def _ask(self, peer: str, request: web.Request) -> tuple[str, dict[str, Any]]:
        url = URL(peer).with_path(request.path).with_query(request.query)
        headers = {
            SCOPE_HEADER: "local",
            "Authorization": request.headers.get("Authorization", ""),
        }
        try:
            async with self.app.http_client.get(url, headers=headers) as response:
                if response.status != 200:
                    raise QueryUnavailableError(f"worker {peer} answered {response.status}")
                return peer, orjson.loads(await response.read())
        except (aiohttp.ClientError, OSError) as exc:
            raise QueryUnavailableError(f"worker {peer} unreachable: {exc}") from None

    def _check_coverage(self, table: str, covered: list[Any]) -> None:
        wrong = missing_partitions(covered, self.partitions[table])
        if wrong:
            raise QueryUnavailableError(f"{table} partitions {sorted(wrong)} not answered once")
