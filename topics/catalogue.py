"""The one registry of topics: names, partition counts, configs and what their keys and values
are. Nothing else in the project spells a topic name.

All topics share one partition count: the listing side (listing events, listing updates) and the
certificate side (certificate changes, certificate commands) each look up tables fed by the
other topic of their side, which is only correct when they are co-partitioned. Co-partitioned by
partition number: the listing side's partitions are whatever the platforms' producers chose, and
ccc-guard sends to them by number; the certificate side's are ccc-guard's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from topics.errors import TopicLayoutError


@dataclass(frozen=True, slots=True)
class TopicNaming:
    """How the topics are named and laid out: what the app's settings tell the Kafka layer."""

    app_id: str  # internal and changelog topics are named after it
    external_prefix: str  # prepended to the external topic names
    listing_events: str
    certificate_status: str
    verdicts: str
    deadletter: str
    shop_alerts: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    key: str  # what the UTF-8 key holds
    # The Avro record its values are (single-object encoded, schema under avro/); None for
    # ccc-guard's internal topics, whose values are the join's private protocol.
    value_record: str | None
    config: tuple[tuple[str, str], ...] = ()

    @property
    def config_dict(self) -> dict[str, str]:
        return dict(self.config)

    @property
    def avro_record(self) -> str:
        """The Avro record name of an Avro topic's values."""
        if self.value_record is None:
            raise TopicLayoutError(f"topic {self.name} does not carry Avro records")
        return self.value_record


_COMPACTED = (("cleanup.policy", "compact"),)
# Long enough to investigate and replay what was rejected.
_DEAD_LETTER_RETENTION = (("cleanup.policy", "delete"), ("retention.ms", str(30 * 86_400_000)))

# The app's tables and what their keys hold.
TABLES = (
    # listing side
    ("listings", "listing_id"),
    ("listing-claims", "cert_no + NUL + listing_id"),
    ("certificate-watches", "cert_no + NUL + listing partition"),
    # certificate side
    ("certificates", "cert_no"),
    ("certificate-subscriptions", "cert_no + NUL + listing partition"),
    # shop side
    ("shop-risk", "platform + NUL + shop_id + NUL + kind and day or id"),
    ("shop-summaries", "platform + NUL + shop_id"),
)


@dataclass(frozen=True, slots=True)
class Catalogue:
    listing_events: TopicSpec
    certificate_status: TopicSpec
    verdicts: TopicSpec
    deadletter: TopicSpec
    shop_alerts: TopicSpec
    # Internal, the foreign-key join's two directions (Kafka Streams' KIP-213 shape):
    certificate_commands: TopicSpec  # listing side → certificate side, keyed by cert_no
    listing_updates: TopicSpec  # certificate side → listing side, to a listing partition
    # Internal: the authority's feed re-keyed onto ccc-guard's own partitioner.
    certificate_changes: TopicSpec
    # Internal: every verdict re-keyed by shop, onto ccc-guard's own partitioner.
    shop_verdicts: TopicSpec
    # Table changelogs, by table name. Faust names them "<app id>-<table>-changelog" and would
    # create them itself, but only after the consumer has fetched metadata: the first
    # assignment then ignores them and every table write fails with PartitionsMismatch. So they
    # are created with the others, before Faust starts.
    changelogs: tuple[tuple[str, TopicSpec], ...]

    def inputs(self) -> tuple[TopicSpec, ...]:
        """The external topics the worker reads: platforms' and the authority's."""
        return (self.listing_events, self.certificate_status)

    def outputs(self) -> tuple[TopicSpec, ...]:
        """The external topics the worker writes."""
        return (self.verdicts, self.deadletter, self.shop_alerts)

    def consumed(self) -> tuple[TopicSpec, ...]:
        """The topics the agents read."""
        return (
            self.listing_events,
            self.listing_updates,
            self.certificate_status,
            self.certificate_changes,
            self.certificate_commands,
            self.shop_verdicts,
        )

    def gapless(self) -> tuple[TopicSpec, ...]:
        """Consumed topics whose offsets have no gaps: only ccc-guard writes them, never
        compacted, never in transactions. Platforms' and the authority's topics may have gaps
        (compaction, transaction markers)."""
        return (
            self.certificate_commands,
            self.listing_updates,
            self.certificate_changes,
            self.shop_verdicts,
        )

    def all(self) -> tuple[TopicSpec, ...]:
        return (
            self.listing_events,
            self.certificate_status,
            self.verdicts,
            self.deadletter,
            self.shop_alerts,
            self.certificate_commands,
            self.listing_updates,
            self.certificate_changes,
            self.shop_verdicts,
            *(spec for _, spec in self.changelogs),
        )


def build_catalogue(naming: TopicNaming) -> Catalogue:
    def spec(
        name: str, key: str, record: str | None, config: tuple[tuple[str, str], ...] = ()
    ) -> TopicSpec:
        return TopicSpec(
            name=name,
            partitions=naming.partitions,
            replication_factor=naming.replication_factor,
            key=key,
            value_record=record,
            config=config,
        )

    # External topics take the prefix; internal ones are namespaced by the app id, as Faust
    # names its changelogs (and Kafka Streams its internal topics).
    external = naming.external_prefix
    internal = f"{naming.app_id}-"
    changelogs = tuple(
        (table, spec(f"{internal}{table}-changelog", key, None, _COMPACTED))
        for table, key in TABLES
    )
    return Catalogue(
        listing_events=spec(external + naming.listing_events, "listing_id", "ListingEvent"),
        certificate_status=spec(
            external + naming.certificate_status,
            "cert_no",
            "CertificateStatusChanged",
            _COMPACTED,
        ),
        verdicts=spec(external + naming.verdicts, "listing_id", "ListingVerdict"),
        deadletter=spec(
            external + naming.deadletter, "original key", "DeadLetter", _DEAD_LETTER_RETENTION
        ),
        shop_alerts=spec(external + naming.shop_alerts, "platform + NUL + shop_id", "ShopAlert"),
        certificate_commands=spec(internal + "certificate-commands", "cert_no", None),
        listing_updates=spec(internal + "listing-updates", "cert_no", None),
        # Not compacted: consumed topics written only by ccc-guard have no offset gaps.
        certificate_changes=spec(
            internal + "certificate-changes", "cert_no", "CertificateStatusChanged"
        ),
        shop_verdicts=spec(internal + "shop-verdicts", "platform + NUL + shop_id", None),
        changelogs=changelogs,
    )
