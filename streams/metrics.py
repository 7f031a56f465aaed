"""The application's Prometheus metrics, beside Faust's own sensors, in one registry per worker.

Names follow Prometheus conventions (base units, ``_total`` counters, ``_seconds``). Labels are
bounded: no listing, shop or certificate ids; platforms are free text from producers, so only the
first ``MAX_PLATFORMS`` seen get their own label value and the rest count as ``other``. Each
worker reports only what it holds: its partitions, its tables, its lag.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.model import Verdict, VerdictAction, VerdictTrigger

MAX_PLATFORMS = 50
_FANOUT_SIZE_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FANOUT_SECONDS_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class BoundedLabel:
    """Label values from producers, capped so a bad producer cannot explode cardinality."""

    def __init__(self, limit: int, overflow: str = "other") -> None:
        self.limit, self.overflow = limit, overflow
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return self.overflow


class ConsumerLagCollector(Collector):
    """``ccc_guard_consumer_lag``: end offset minus committed offset, per assigned partition of
    the topics the agents consume, read from Faust's monitor at scrape time (Faust exports both
    offsets, not their difference). Changelogs are left out: standby and recovery reads never
    commit, so their "lag" would be the whole changelog."""

    def __init__(self, app: Any, topics: Iterable[str]) -> None:
        self.app, self.topics = app, frozenset(topics)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ccc_guard_consumer_lag",
            "Records not yet committed by this worker, per assigned topic partition.",
            labels=["topic", "partition"],
        )
        monitor = self.app.monitor
        assigned = self.app.consumer.assignment() if self.app.consumer else set()
        committed: Mapping[Any, int] = monitor.tp_committed_offsets or {}
        for tp, end in (monitor.tp_end_offsets or {}).items():
            if tp in assigned and tp.topic in self.topics:
                family.add_metric([tp.topic, str(tp.partition)], max(end - committed.get(tp, 0), 0))
        yield family


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._platform = BoundedLabel(MAX_PLATFORMS)
        self.listing_events = Counter(
            "ccc_guard_listing_events_total",
            "Listing events accepted for verification, by event type.",
            ["event_type"],
            registry=registry,
        )
        self.verdicts = Counter(
            "ccc_guard_verdicts_total",
            "Verdicts produced, by platform and action.",
            ["platform", "action"],
            registry=registry,
        )
        self.verdict_reasons = Counter(
            "ccc_guard_verdict_reasons_total",
            "Failing reasons carried by verdicts (a verdict may carry several).",
            ["platform", "action", "reason"],
            registry=registry,
        )
        self.verdict_warnings = Counter(
            "ccc_guard_verdict_warnings_total",
            "Warnings carried by verdicts, which did not change their action (MODEL_MISMATCH "
            "under CCC_MODEL_MISMATCH=WARN).",
            ["platform", "warning"],
            registry=registry,
        )
        self.verdict_latency = Histogram(
            "ccc_guard_verdict_latency_seconds",
            "From the trigger's event time to the verdict being produced.",
            ["trigger"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.certificate_changes = Counter(
            "ccc_guard_certificate_changes_total",
            "Certificate status changes, by outcome: applied, stale (older or duplicate version).",
            ["outcome"],
            registry=registry,
        )
        self.fanout_partitions = Histogram(
            "ccc_guard_recheck_fanout_partitions",
            "Listing partitions one certificate change or expiry was sent to (one each).",
            ["trigger"],
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.fanout_listings = Histogram(
            "ccc_guard_recheck_fanout_listings",
            "Listings of one listing partition re-checked by one certificate change or expiry.",
            ["trigger"],
            buckets=_FANOUT_SIZE_BUCKETS,
            registry=registry,
        )
        self.fanout_seconds = Histogram(
            "ccc_guard_recheck_fanout_duration_seconds",
            "Time to re-check every claiming listing of one listing partition.",
            ["trigger"],
            buckets=_FANOUT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.certificates = Gauge(
            "ccc_guard_certificates",
            "Certificates held by this worker's partitions, by status (refreshed each sweep).",
            ["status"],
            registry=registry,
        )
        self.listings_indexed = Gauge(
            "ccc_guard_listings_indexed",
            "Listings held in state by this worker's partitions (estimate).",
            registry=registry,
        )
        self.claims_indexed = Gauge(
            "ccc_guard_claims_indexed",
            "Certificate claims indexed by this worker's partitions (estimate).",
            registry=registry,
        )
        self.dead_letters = Counter(
            "ccc_guard_dead_letters_total",
            "Records sent to the dead-letter topic, by source topic and error kind.",
            ["source_topic", "kind"],
            registry=registry,
        )
        self.sweep_last_run = Gauge(
            "ccc_guard_expiry_sweep_last_run_timestamp_seconds",
            "When the expiry sweep last finished (Unix time).",
            registry=registry,
        )
        self.sweep_expired = Counter(
            "ccc_guard_expiry_sweep_certificates_total",
            "Certificates the expiry sweep found past their validity.",
            registry=registry,
        )
        self.reasks = Counter(
            "ccc_guard_reasks_total",
            "Certificate answers asked for again because a listing check waited too long "
            "(each one means a subscription or answer was lost on the way).",
            registry=registry,
        )
        self.expiry_takedowns = Counter(
            "ccc_guard_expiry_takedowns_total",
            "Listings taken down because a certificate expired.",
            registry=registry,
        )
        self.stale_stores = Counter(
            "ccc_guard_stale_stores_total",
            "Local table partitions found to belong to another changelog (another cluster's, "
            "or one deleted and made again), moved aside and rebuilt from the changelog.",
            ["table"],
            registry=registry,
        )
        self.shop_alerts = Counter(
            "ccc_guard_shop_alerts_total",
            "Shop alerts sent to the shop-alerts topic, by kind (RAISED, CLEARED).",
            ["kind"],
            registry=registry,
        )
        for kind in ("RAISED", "CLEARED"):  # at 0 from the start: a rate has data before any
            self.shop_alerts.labels(kind)
        self.shops_over_threshold = Gauge(
            "ccc_guard_shops_over_threshold",
            "Shops on this worker's partitions over a repeat-offender threshold now (refreshed "
            "each shop sweep).",
            registry=registry,
        )
        self.shops_tracked = Gauge(
            "ccc_guard_shops_tracked",
            "Shops on this worker's partitions with offences in their window (refreshed each "
            "shop sweep).",
            registry=registry,
        )
        self.shop_late_verdicts = Counter(
            "ccc_guard_shop_late_verdicts_total",
            "BLOCK and TAKEDOWN verdicts older than the shop window, so not counted.",
            registry=registry,
        )
        self.ready = Gauge(
            "ccc_guard_ready",
            "1 when partitions are assigned and tables recovered, else 0.",
            registry=registry,
        )

    def verdict(self, verdict: Verdict, produced_at_ms: int) -> None:
        platform = self._platform(verdict.platform)
        action = str(verdict.action)
        self.verdicts.labels(platform, action).inc()
        for reason in verdict.reasons:
            self.verdict_reasons.labels(platform, action, str(reason)).inc()
        for warning in verdict.warnings:
            self.verdict_warnings.labels(platform, str(warning)).inc()
        self.verdict_latency.labels(str(verdict.trigger)).observe(
            max(produced_at_ms - verdict.event_time, 0) / 1000
        )
        if (
            verdict.trigger is VerdictTrigger.CERTIFICATE_EXPIRY
            and verdict.action is VerdictAction.TAKEDOWN
        ):
            self.expiry_takedowns.inc()

    def certificate_counts(self, statuses: Iterable[str]) -> None:
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
        for status in ("VALID", "SUSPENDED", "REVOKED", "CANCELLED", "EXPIRED"):
            self.certificates.labels(status).set(counts.get(status, 0))
