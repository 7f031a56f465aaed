"""``ccc-guard explain LISTING_ID``, ``ccc-guard claimers CERT_NO`` and ``ccc-guard shop PLATFORM
SHOP_ID``: the query API's answers for a person, as readable tables.

Exit codes: 0 found, 1 not found, 2 anything else (no token, refused, unreachable, still
rebalancing after a few tries). They ask a worker's query API (``--url``, by default this
host's worker from ``CCC_WEB_HOST``/``CCC_WEB_PORT``) with the token of
``CCC_QUERY_TOKEN_FILE``; any worker answers for every listing.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TextIO

import orjson

from streams.errors import ConfigError, QueryFailedError
from streams.settings import Settings

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_FAILED = 0, 1, 2
COMMANDS = ("explain", "claimers", "shop")
_CST = timezone(timedelta(hours=8), "CST")
_RETRIES = 4  # of a 503, honouring its Retry-After
_HTTP_TIMEOUT_S = 30.0


def cst_time(ms: int | None) -> str:
    """A timestamp in China Standard Time, the time compliance staff and regulators use."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(_CST).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def render_listing(doc: Mapping[str, Any]) -> str:
    lines = [
        f"listing   {doc['listing_id']}  ({doc['platform']}, shop {doc['shop_id']})",
        f"status    {doc['status']}",
        f"reasons   {_cell(doc['reasons'])}",
        f"warnings  {_cell(doc['warnings'])}",
        f"claims    {_cell(doc['claimed'])}" + (f"   model {doc['model']}" if doc["model"] else ""),
        f"rules     {doc['rules_version'] or '-'}",
    ]
    if doc["awaiting"]:
        lines.append(f"awaiting  answers for {_cell(doc['awaiting'])}")
    lines += ["", "Certificates as decided on:"]
    lines.append(
        table(
            ("cert_no", "known", "status", "version", "valid_until", "category", "why"),
            [
                (
                    c["cert_no"],
                    c["known"],
                    c["status"],
                    c["version"],
                    c["valid_until"],
                    c["category_code"],
                    [*c["reasons"], *c["warnings"]],
                )
                for c in doc["certificates"]
            ],
        )
    )
    lines += ["", "Latest verdicts (China Standard Time):"]
    lines.append(
        table(
            ("decided_at", "action", "trigger", "trigger_id", "verdict_id"),
            [
                (
                    cst_time(v["decided_at"]),
                    v["action"],
                    v["trigger"],
                    v["trigger_id"],
                    v["verdict_id"],
                )
                for v in doc["verdicts"]
            ],
        )
    )
    lines += [
        "",
        f"answered by {doc['worker']}; held by {doc['owner']}, partition {doc['partition']}",
    ]
    return "\n".join(lines)


def render_certificate(doc: Mapping[str, Any]) -> str:
    if not doc["known"]:
        return (
            f"certificate {doc['cert_no']}: not published by the authority, "
            f"claimed by {doc['claimed_by']} listing(s)"
        )
    changed = cst_time(doc["changed_at"])
    return "\n".join(
        [
            f"certificate {doc['cert_no']}",
            f"status      {doc['status']} (version {doc['version']}, changed {changed})",
            f"reason      {doc['reason'] or '-'}",
            f"valid until {doc['valid_until']}",
            f"category    {doc['category_code'] or '-'}",
            f"models      {_cell(doc['models'])}",
            f"claimed by  {doc['claimed_by']} listing(s)",
        ]
    )


def render_shop(doc: Mapping[str, Any]) -> str:
    last = doc["last_alert"]
    alert = (
        "-"
        if last is None
        else f"{last['kind']} {cst_time(last['decided_at'])} ({last['alert_id']})"
    )
    lines = [
        f"shop        {doc['platform']}/{doc['shop_id']}",
        f"window      {doc['window_start']} .. {doc['window_end']} "
        f"(CST, {doc['window_days']} days)",
        f"takedowns   {doc['takedowns']} (alert at {doc['threshold_takedowns'] or '-'})",
        f"blocks      {doc['blocks']} (alert at {doc['threshold_blocks'] or '-'})",
        f"listings    {doc['distinct_listings']} distinct; "
        f"certificates {doc['distinct_certificates']} distinct",
        f"alerted     {_cell(doc['alerting'])}; crossings {doc['crossings']}; last alert {alert}",
        f"latest      {_cell(doc['sample_listing_ids'])}",
        "",
        table(
            ("action", "reason", "count"),
            [(r["action"], r["reason"], r["count"]) for r in doc["by_reason"]],
        ),
    ]
    return "\n".join(lines)


# -- talking to a worker -----------------------------------------------------------------------

Fetch = Callable[[str], tuple[int, dict[str, Any]]]


def http_fetch(base_url: str, token: bytes) -> Fetch:
    def fetch(path: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            base_url.rstrip("/") + path, headers={"Authorization": f"Bearer {token.decode()}"}
        )
        for attempt in range(_RETRIES + 1):
            try:
                with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
                    return response.status, orjson.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code == 503 and attempt < _RETRIES:
                    time.sleep(_retry_after_s(error.headers.get("Retry-After")))
                    continue
                return error.code, _json_or_empty(error.read())
            except (urllib.error.URLError, OSError) as error:
                raise QueryFailedError(f"cannot reach {base_url}: {error}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    return fetch


def _retry_after_s(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.1), 30.0)
    except ValueError:
        return 1.0


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _checked(status: int, doc: Mapping[str, Any]) -> bool:
    """True when found, False when not; raises for every other answer."""
    if status == 200:
        return True
    if status == 404:
        return False
    if status == 401:
        raise QueryFailedError("the worker refused the token: check CCC_QUERY_TOKEN_FILE")
    raise QueryFailedError(f"the worker answered {status}: {doc.get('error', 'no detail')}")


def _quoted(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def explain(fetch: Fetch, listing_id: str, out: TextIO) -> int:
    status, doc = fetch(f"/v1/listings/{_quoted(listing_id)}")
    if not _checked(status, doc):
        print(f"listing {listing_id}: not found", file=out)
        return EXIT_NOT_FOUND
    print(render_listing(doc), file=out)
    return EXIT_FOUND


def _claimer_pages(fetch: Fetch, cert_no: str, page: int) -> Iterator[list[dict[str, Any]]]:
    after = ""
    while True:
        query = urllib.parse.urlencode({"after": after, "limit": page})
        status, doc = fetch(f"/v1/certificates/{_quoted(cert_no)}/listings?{query}")
        if status != 200:
            raise QueryFailedError(f"a page of claimers answered {status}: {doc.get('error')}")
        yield doc["listings"]
        if doc["next_after"] is None:
            return
        after = doc["next_after"]


def claimers(fetch: Fetch, cert_no: str, out: TextIO, page: int = 500) -> int:
    status, doc = fetch(f"/v1/certificates/{_quoted(cert_no)}")
    if not _checked(status, doc):
        print(f"certificate {cert_no}: not found", file=out)
        return EXIT_NOT_FOUND
    print(render_certificate(doc), file=out)
    print("", file=out)
    for rows in _claimer_pages(fetch, cert_no, page):
        # A page at a time: a certificate with 100,000 claimers prints as it arrives.
        if rows:
            body = table(
                ("listing_id", "status", "partition"),
                [(r["listing_id"], r["status"], r["partition"]) for r in rows],
            )
            print(body, file=out, flush=True)
    return EXIT_FOUND


def shop(fetch: Fetch, platform: str, shop_id: str, out: TextIO) -> int:
    status, doc = fetch(f"/v1/shops/{_quoted(platform)}/{_quoted(shop_id)}")
    if not _checked(status, doc):
        print(f"shop {platform}/{shop_id}: no BLOCK or TAKEDOWN in the window", file=out)
        return EXIT_NOT_FOUND
    print(render_shop(doc), file=out)
    return EXIT_FOUND


def main(argv: Sequence[str], environ: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        print(f"ccc-guard: configuration error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    parser = argparse.ArgumentParser(prog="ccc-guard", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, arguments, help_text in (
        ("explain", ("listing_id",), "Why a listing is live or blocked, and its latest verdicts."),
        ("claimers", ("cert_no",), "A certificate's status and every listing that claims it."),
        ("shop", ("platform", "shop_id"), "A shop's BLOCKs and TAKEDOWNs over its window."),
    ):
        command = commands.add_parser(name, help=help_text)
        for argument in arguments:
            command.add_argument(argument)
        command.add_argument(
            "--url",
            default=f"http://{settings.web_host}:{settings.web_port}",
            help="A worker's web server (default: this host's, from CCC_WEB_HOST/CCC_WEB_PORT).",
        )
    args = parser.parse_args(argv)
    try:
        token = settings.query_token()
        if token is None:
            raise QueryFailedError("the query API is off: set CCC_QUERY_TOKEN_FILE")
        fetch = http_fetch(args.url, token)
        if args.command == "explain":
            return explain(fetch, args.listing_id, out)
        if args.command == "shop":
            return shop(fetch, args.platform, args.shop_id, out)
        return claimers(fetch, args.cert_no, out)
    except (QueryFailedError, ConfigError) as exc:
        print(f"ccc-guard {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # Whatever else goes wrong (a body cut short, a URL without scheme) must not exit 1, which
    # says "not found".
    except Exception as exc:
        print(f"ccc-guard {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
