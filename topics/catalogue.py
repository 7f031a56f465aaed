"""The one registry of topics: names, partition counts, configs and what their keys and values
are. Nothing else in the project spells a topic name.

All topics share one partition count: the listing side (listing events, listing updates) and the
certificate side (status changes, certificate commands) each look up tables fed by the other
topics of their side, which is only correct when they are co-partitioned.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from streams.settings import Settings


class ValueFormat(StrEnum):
    AVRO = "avro"  # single-object encoded, schema under avro/
    INTERNAL = "internal"  # streams.join_protocol messages, private to ccc-guard


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    key: str  # what the UTF-8 key holds
    value_format: ValueFormat
    value_record: str | None  # Avro record name, for AVRO values
    config: tuple[tuple[str, str], ...] = ()

    @property
    def config_dict(self) -> dict[str, str]:
        return dict(self.config)


_COMPACTED = (("cleanup.policy", "compact"),)
# Long enough to investigate and replay what was rejected.
_DEAD_LETTER_RETENTION = (("cleanup.policy", "delete"), ("retention.ms", str(30 * 86_400_000)))

# The app's tables and what their keys hold.
TABLES = (
    ("listings", "listing_id"),
    ("certificates", "cert_no"),
    ("claims", "cert_no + NUL + listing_id"),
)


@dataclass(frozen=True, slots=True)
class Catalogue:
    listing_events: TopicSpec
    certificate_status: TopicSpec
    verdicts: TopicSpec
    deadletter: TopicSpec
    # Internal, the foreign-key join's two directions (Kafka Streams' KIP-213 shape):
    certificate_commands: TopicSpec  # listing side → certificate side, keyed by cert_no
    listing_updates: TopicSpec  # certificate side → listing side, keyed by listing_id
    # Table changelogs, by table name. Faust names them "<app id>-<table>-changelog" and would
    # create them itself, but only after the consumer has fetched metadata: the first
    # assignment then ignores them and every table write fails with PartitionsMismatch. So they
    # are created with the others, before Faust starts.
    changelogs: tuple[tuple[str, TopicSpec], ...]

    def consumed(self) -> tuple[TopicSpec, ...]:
        """The topics the two agents read."""
        return (
            self.listing_events,
            self.listing_updates,
            self.certificate_status,
            self.certificate_commands,
        )

    def gapless(self) -> tuple[TopicSpec, ...]:
        """Consumed topics whose offsets have no gaps: only ccc-guard writes them, never
        compacted, never in transactions. Platforms' and the authority's topics may have gaps
        (compaction, transaction markers)."""
        return (self.certificate_commands, self.listing_updates)

    def all(self) -> tuple[TopicSpec, ...]:
        return (
            self.listing_events,
            self.certificate_status,
            self.verdicts,
            self.deadletter,
            self.certificate_commands,
            self.listing_updates,
            *(spec for _, spec in self.changelogs),
        )


def build_catalogue(settings: Settings) -> Catalogue:
    def spec(
        name: str,
        key: str,
        value_format: ValueFormat,
        record: str | None,
        config: tuple[tuple[str, str], ...] = (),
    ) -> TopicSpec:
        return TopicSpec(
            name=name,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            key=key,
            value_format=value_format,
            value_record=record,
            config=config,
        )

    # External topics take the prefix; internal ones are namespaced by the app id, as Faust
    # names its changelogs (and Kafka Streams its internal topics).
    external = settings.topic_prefix
    internal = f"{settings.app_id}-"
    changelogs = tuple(
        (table, spec(f"{internal}{table}-changelog", key, ValueFormat.INTERNAL, None, _COMPACTED))
        for table, key in TABLES
    )
    return Catalogue(
        listing_events=spec(
            external + settings.listing_events_topic, "listing_id", ValueFormat.AVRO, "ListingEvent"
        ),
        certificate_status=spec(
            external + settings.certificate_status_topic,
            "cert_no",
            ValueFormat.AVRO,
            "CertificateStatusChanged",
            _COMPACTED,
        ),
        verdicts=spec(
            external + settings.verdicts_topic, "listing_id", ValueFormat.AVRO, "ListingVerdict"
        ),
        deadletter=spec(
            external + settings.deadletter_topic,
            "original key",
            ValueFormat.AVRO,
            "DeadLetter",
            _DEAD_LETTER_RETENTION,
        ),
        certificate_commands=spec(
            internal + "certificate-commands", "cert_no", ValueFormat.INTERNAL, None
        ),
        listing_updates=spec(
            internal + "listing-updates", "listing_id", ValueFormat.INTERNAL, None
        ),
        changelogs=changelogs,
    )
