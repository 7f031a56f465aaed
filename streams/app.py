"""Build the Faust app from settings: Faust configuration, topic creation at start, topology."""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from streams.clock import Clock, wall_clock_ms
from streams.credentials import faust_credentials
from streams.errors import ConfigError
from streams.faust_adapter import (
    ProcessedAcks,
    StaleStore,
    bounded_stop_worker,
    commit_only_contiguous,
    name_foreign_static_assignment,
    quarantine_stale_stores,
    wait_for_changelog_on_flush,
)
from streams.metrics import GuardMetrics
from streams.query_api import QueryAPI
from streams.settings import Settings
from streams.topology import Topology
from streams.web import install_web
from topics.admin import ensure_topics
from topics.catalogue import Catalogue, build_catalogue
from topics.codecs import AvroCodec
from topics.connection import KafkaConnection

log = logging.getLogger(__name__)


class GuardApp(faust.App):
    """A Faust app that makes sure its topics exist before its consumer subscribes.

    ``on_first_start`` is mode's hook that runs before any child service (producer, consumer,
    tables) starts: topics created there are in place, with the catalogue's partition counts,
    when Faust first asks for them. Without it a missing input topic is only a warning in
    Faust's assignor, and the worker would sit idle. It is also where the fixes to Faust's
    commit path (``streams/faust_adapter.py``) go in, before the consumer and producer start.
    """

    guard_settings: Settings
    catalogue: Catalogue
    kafka_connection: KafkaConnection
    processed_acks: ProcessedAcks
    guard_metrics: GuardMetrics

    def _on_stale_store(self, stale: StaleStore) -> None:
        log.warning(
            "table %s partition %d: local state is not this changelog's (persisted offset %d, "
            "changelog ends at %d): moved aside to %s, rebuilding from the changelog",
            stale.table,
            stale.partition,
            stale.persisted_offset,
            stale.changelog_end,
            stale.moved_to,
        )
        self.guard_metrics.stale_stores.labels(stale.table).inc()

    async def on_first_start(self) -> None:
        await super().on_first_start()
        wait_for_changelog_on_flush(self)
        self.processed_acks.install(self)
        quarantine_stale_stores(self, self._on_stale_store)
        if self.guard_settings.group_instance_id:
            name_foreign_static_assignment(self.assignor, self.guard_settings.group_instance_id)
        commit_only_contiguous(
            self,
            frozenset(spec.name for spec in self.catalogue.consumed()),
            frozenset(spec.name for spec in self.catalogue.gapless()),
        )
        connection = self.kafka_connection
        log.info("Kafka %s (%s)", connection.bootstrap_servers, connection.describe())
        created = await ensure_topics(connection, self.catalogue.all())
        if created:
            log.info("created %d missing topic(s): %s", len(created), ", ".join(created))


def faust_literal(text: str) -> str:
    """``text`` as Faust will read it back: it expands ``{conf...}`` in its data directory with
    ``str.format`` on every read, so a brace in a path was a ``KeyError`` from inside its banner."""
    return text.replace("{", "{{").replace("}", "}}")


def create_app(settings: Settings, *, clock: Clock = wall_clock_ms) -> tuple[GuardApp, Topology]:
    """Raises ``ConfigError`` when the Kafka security files or the query token cannot be
    used."""
    connection = KafkaConnection.from_config(settings.connection_config())
    app = GuardApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        # TLS and SASL for Faust's consumer and producer; never in the broker URL, which Faust
        # prints in its start-up banner.
        broker_credentials=faust_credentials(connection),
        store=settings.store,
        datadir=faust_literal(str(Path(settings.data_dir))),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.group_instance_id or None,
        producer_linger_ms=settings.producer_linger_ms,
        web_enabled=settings.web_enabled,
        # web_host only names the worker in its URL (the one the query API's peers call);
        # web_bind is the address it listens on.
        web_host=settings.advertised_web_host,
        web_bind=settings.web_host,
        # Faust's own pages would serve table contents (listing state) and topology to anyone
        # who can reach the port; ccc-guard serves only /metrics, /healthz and /readyz.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_port=settings.web_port,
        # Verdict ids are deterministic: at-least-once with idempotent outputs is the contract
        # (Faust's exactly_once has open duplicate and fencing bugs).
        processing_guarantee="at_least_once",
        Worker=bounded_stop_worker(settings.stop_timeout_s),
        # Every topic and table carries bytes we encode ourselves (Avro or orjson).
        key_serializer="raw",
        value_serializer="raw",
    )
    app.guard_settings = settings
    app.kafka_connection = connection
    app.catalogue = build_catalogue(settings.topic_naming())
    metrics = install_web(app, [spec.name for spec in app.catalogue.consumed()])
    app.guard_metrics = metrics
    app.processed_acks = ProcessedAcks()
    topology = Topology(
        app, settings, app.catalogue, AvroCodec(), metrics, app.processed_acks, clock
    )
    token = settings.query_token()
    if token is not None:
        if not settings.web_enabled:
            raise ConfigError("CCC_QUERY_TOKEN_FILE is set, but CCC_WEB_ENABLED=false")
        if settings.advertised_web_host == "0.0.0.0":
            raise ConfigError(
                "CCC_QUERY_TOKEN_FILE is set and CCC_WEB_HOST=0.0.0.0: set "
                "CCC_WEB_ADVERTISED_HOST to the address other workers reach this one at"
            )
        if settings.advertised_web_host in {"127.0.0.1", "localhost"}:
            log.warning(
                "query API: this worker's URL is on loopback (%s): it gathers answers only from "
                "workers on this host; set CCC_WEB_ADVERTISED_HOST when workers run on several",
                settings.advertised_web_host,
            )
        QueryAPI(
            app,
            topology.query_reader(),
            token,
            settings.query_timeout_s,
            topology.table_partitions(),
            topology.limits,
        ).install()
    return app, topology
