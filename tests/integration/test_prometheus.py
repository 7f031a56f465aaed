"""A real Prometheus scraping two real workers: every dashboard query and every rule has data.

The dashboard (``deploy/grafana/ccc-guard-dashboard.json``) and the rules
(``deploy/prometheus/alerts.yml``) name metrics, labels and label values by hand; this test keeps
them in step with ``streams/metrics.py`` and Faust's sensors. Two workers are fed a demo stream
with every kind of certificate change, an expiry and bad records, so every metric family has
data; Prometheus scrapes both every second and loads the rules; then every expression must return
at least one series with a number.

An alert expression is a filter (``x > 1000``) and is empty while all is well, so it is run with
``bool`` after each comparison (``x > bool 1000``): one 0/1 series for every series the alert
could fire on. That checks selectors, aggregations and the ``and`` / ``or`` joins as written,
with nothing cut off. The argument of ``absent(...)`` is queried on its own. The rules' own unit
tests (``promtool test rules deploy/prometheus/alerts_test.yml``) check the thresholds.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localkafka.ports import free_port
from streams.clock import DAY_MS
from streams.demo_feed import DemoFeed, certificate
from tests.builders import cert_no, listing_event, listing_id, now_ms, status_change, today_cst
from tests.integration.harness import CODEC, REPO, Deployment, Guard, running_guard
from topics.client import GuardProducer

PROMETHEUS = shutil.which("prometheus")
INSTALL = "apt-get install -y prometheus  (or any Prometheus 2.x/3.x binary on PATH)"
DASHBOARD = REPO / "deploy" / "grafana" / "ccc-guard-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = REPO / "docs" / "runbook.md"

# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "instance": ".*",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_ABSENT = re.compile(r"\babsent(?:_over_time)?\(")
FEED_SECONDS = 20.0


@dataclass
class FixedPortDeployment(Deployment):
    """A deployment whose workers keep one web port each, known before they start
    (``Deployment.env`` picks a new free port every call)."""

    web_ports: dict[int, int] = field(default_factory=dict)

    def env(self, worker_index: int) -> dict[str, str]:
        env = super().env(worker_index)
        env["CCC_WEB_PORT"] = str(self.web_ports.setdefault(worker_index, free_port()))
        return env


# -- expressions ------------------------------------------------------------------------------


def grafana_to_promql(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(value, expr)


def keep_every_series(expr: str) -> str:
    """``expr`` with ``bool`` after every comparison outside label matchers and strings."""
    out: list[str] = []
    i, braces, quote = 0, 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            out.append(expr[i : i + 2] if char == "\\" else char)
            i += 2 if char == "\\" else 1
            if char == quote:
                quote = ""
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            braces += 1
        elif char == "}":
            braces -= 1
        elif braces == 0:
            op = next((o for o in _COMPARISONS if expr.startswith(o, i)), None)
            if op is not None:
                i += len(op)
                already = re.match(r"\s*bool\b", expr[i:]) is not None
                out.append(op if already else f"{op} bool")
                continue
        out.append(char)
        i += 1
    return "".join(out)


def absent_arguments(expr: str) -> list[str]:
    arguments = []
    for match in _ABSENT.finditer(expr):
        depth, start = 1, match.end()
        for end in range(start, len(expr)):
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            if depth == 0:
                arguments.append(expr[start:end])
                break
    return arguments


def dashboard_queries() -> dict[str, str]:
    """PromQL of every target of every panel, by "panel title / refId"."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [*dashboard["panels"]]
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    queries = {}
    for panel in panels:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} / {target['refId']}"] = grafana_to_promql(target["expr"])
    return queries


def test_expression_rewrites() -> None:
    expr = 'a{topic!~".+-changelog", x=">"} > 10000\nand\nderiv(b[5m]) >= bool 0 or c == 0'
    assert keep_every_series(expr) == (
        'a{topic!~".+-changelog", x=">"} > bool 10000\nand\nderiv(b[5m]) >= bool 0 or c == bool 0'
    )
    assert absent_arguments('up == 0 or absent(up{job="x"}) or absent(f(g))') == [
        'up{job="x"}',
        "f(g)",
    ]
    assert grafana_to_promql('rate(x{i=~"$instance"}[$__rate_interval]) ${__range}') == (
        'rate(x{i=~".*"}[1m]) 5m'
    )


# -- Prometheus -------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, root: Path, targets: list[str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {  # JSON is YAML
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "ccc-guard", "static_configs": [{"targets": targets}]}],
        }
        (root / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.log_path = root / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"prometheus did not start:\n{self.log_tail()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with the parser's error
            raise AssertionError(f"{path} {params}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def has_data(self, expr: str) -> bool:
        """At least one series (or a scalar) with a number, not NaN, right now."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return not math.isnan(float(data["result"][1]))
        return any(not math.isnan(float(series["value"][1])) for series in data["result"])

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def prometheus_and_guard(kafka: str, tmp_path: Path) -> Iterator[tuple[Prometheus, Guard]]:
    deployment = FixedPortDeployment(kafka, tmp_path / "guard", web_ports={0: free_port()})
    deployment.web_ports[1] = free_port()
    targets = [f"127.0.0.1:{port}" for port in deployment.web_ports.values()]
    # Started first, so it scrapes the workers from their first second.
    prometheus = Prometheus(tmp_path / "prometheus", targets)
    try:
        with running_guard(deployment, workers=2) as guard:
            yield prometheus, guard
    finally:
        prometheus.stop()


# -- the feed ---------------------------------------------------------------------------------


async def _feed(guard: Guard, seconds: float) -> str:
    """A demo stream for ``seconds``, with every kind of certificate change, an expiry, stale
    changes and bad records; returns the listing the expiry must take down."""
    catalogue = guard.deployment.catalogue
    demo = DemoFeed(seed=20_240_601)
    async with GuardProducer(guard.deployment.bootstrap, catalogue, CODEC) as producer:
        for change in demo.initial_certificates():
            await producer.certificate_status(change)
        # A certificate already past its valid-until day: the listing's own time is before the
        # expiry, so it is allowed, then the sweep expires the certificate and takes it down.
        expiring, expiring_listing = cert_no(), listing_id()
        expires_on = today_cst() - 2
        await producer.certificate_status(
            status_change(expiring, expires_on=expires_on, changed_at=now_ms() - 9 * DAY_MS)
        )
        await producer.listing_event(
            listing_event(expiring_listing, [expiring], occurred_at=(expires_on - 1) * DAY_MS)
        )

        events, status = catalogue.listing_events.name, catalogue.certificate_status.name
        good = CODEC.encode("ListingEvent", listing_event("L-bad", []))
        bad_records: list[tuple[str, bytes | None, bytes | None]] = [
            (events, b"L-bad", b"not avro"),  # bad_magic
            (events, b"L-bad", good[:2] + bytes(8) + good[10:]),  # unknown_schema
            (events, b"L-bad", good[: len(good) // 2]),  # malformed_body
            (events, b"L-other", good),  # invalid_record: key is not the listing_id
            (status, b"2019010907000001", b"\xc3\x01nope"),  # unknown_schema
        ]
        statuses = ("SUSPENDED", "VALID", "REVOKED", "VALID", "CANCELLED", "VALID")
        last_change: dict[str, Any] | None = None
        started, tick = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            tick += 1
            await producer.listing_event(demo.listing_event(tick))
            if tick % 20 == 0:  # about one a second: suspend, reinstate, revoke, ... in turn
                cert, category, product = demo.certificates[(tick // 20) % 6]
                demo.versions[cert] += 1
                last_change = certificate(
                    cert,
                    category,
                    product,
                    statuses[(tick // 20) % len(statuses)],
                    demo.versions[cert],
                    now_ms(),
                )
                await producer.certificate_status(last_change)
            if tick % 60 == 30 and last_change is not None:
                await producer.certificate_status(last_change)  # a duplicate: stale
            if tick % 50 == 25:
                await producer.raw(*bad_records[(tick // 50) % len(bad_records)])
            await asyncio.sleep(0.05)
        await producer.flush()
    return expiring_listing


# -- the test ---------------------------------------------------------------------------------


# A mark, not a skip in the fixture: checked before the session broker is started for nothing.
@pytest.mark.skipif(PROMETHEUS is None, reason=f"no prometheus binary on PATH; {INSTALL}")
def test_dashboard_and_rules_have_data_from_real_workers(
    prometheus_and_guard: tuple[Prometheus, Guard],
) -> None:
    prometheus, guard = prometheus_and_guard
    expiring_listing = asyncio.run(_feed(guard, FEED_SECONDS))
    takedowns = guard.verdicts.wait_for(
        lambda v: v["listing_id"] == expiring_listing and v["action"] == "TAKEDOWN", timeout=30
    )
    assert takedowns[0]["trigger"] == "CERTIFICATE_EXPIRY"

    targets = prometheus.api("targets")["activeTargets"]
    assert sorted(t["health"] for t in targets) == ["up", "up"], targets

    # Every rule loaded and evaluated without error.
    deadline = time.monotonic() + 20
    while True:
        groups = [
            g for g in prometheus.api("rules")["groups"] if Path(g["file"]).name == RULES.name
        ]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule["health"] == "ok" for rule in rules):
            break
        assert time.monotonic() < deadline, f"rules not healthy: {json.dumps(groups, indent=1)}"
        time.sleep(0.5)
    assert [g["name"] for g in groups] == ["ccc-guard"]

    queries = dashboard_queries()
    assert len(queries) >= 20, queries
    alerts = [rule for rule in rules if rule["type"] == "alerting"]
    for rule in rules:
        kind = "alert" if rule["type"] == "alerting" else "record"
        queries[f"{kind} {rule['name']}"] = keep_every_series(rule["query"])
        for n, argument in enumerate(absent_arguments(rule["query"])):
            queries[f"{kind} {rule['name']} / absent argument {n}"] = argument

    # Every alert links its own runbook section.
    runbook = RUNBOOK.read_text()
    for alert in alerts:
        name = alert["name"]
        assert alert["labels"]["severity"] in {"page", "ticket"}, alert
        assert alert["annotations"]["runbook_url"].endswith(f"docs/runbook.md#{name.lower()}")
        assert f"\n## {name}\n" in runbook, f"docs/runbook.md has no section '## {name}'"

    # Every ccc_guard_* family the workers export is on the dashboard or in a rule.
    names = prometheus.api("label/__name__/values")
    families = {
        re.sub(r"_(bucket|count|sum)$", "", name) for name in names if name.startswith("ccc_guard_")
    }
    everything = "\n".join(queries.values())
    unused = sorted(f for f in families if not re.search(rf"\b{f}(_bucket)?\b", everything))
    assert unused == [], f"metric families on no dashboard panel and in no rule: {unused}"

    # Then every query must have data; some need a few scrapes or rule evaluations first.
    empty_at_first = sorted(name for name, expr in queries.items() if not prometheus.has_data(expr))
    print(f"empty at the first evaluation: {empty_at_first}")
    deadline = time.monotonic() + 20
    empty = empty_at_first
    while empty and time.monotonic() < deadline:
        time.sleep(1)
        empty = [name for name in empty if not prometheus.has_data(queries[name])]
    assert empty == [], "no data for:\n" + "\n".join(f"{n}: {queries[n]}" for n in empty)
