"""Make the broker hold every topic of the catalogue, as declared.

Run at worker start (and by ``ccc-guard topics``): missing topics are created with their
partition count and config, so a bare broker just works; an existing topic with another
partition count stops the worker, because co-partitioned lookups would silently miss. Both
functions connect as ``topics.connection`` says (TLS, SASL) and stop with a
``BrokerConnectionError`` naming the cause when no broker accepts the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from topics.catalogue import TopicSpec
from topics.connection import KafkaConnection, as_connection, start_client
from topics.errors import TopicLayoutError

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_TOPIC_AUTHORIZATION_FAILED = 29
_CLUSTER_AUTHORIZATION_FAILED = 31


def _admin_client(connection: KafkaConnection) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection.aiokafka_kwargs(), client_id="ccc-guard-admin")


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic in await admin.describe_topics(names):
        if topic["error_code"] == 0:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _settled_partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float
) -> dict[str, int]:
    """Partition counts of ``names`` once every partition of every one has a leader.

    A topic created a moment ago can be missing from metadata, or show no partitions, for a
    while; Faust's assignor then *ignores* it ("Ignoring missing topic") and the worker never
    consumes it until the next rebalance (seen on a fresh broker: listings waited forever).
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        topics = await admin.describe_topics(names)
        unsettled = [
            t["topic"]
            for t in topics
            if t["error_code"] != 0
            or not t["partitions"]
            or any(p["error_code"] != 0 or p["leader"] < 0 for p in t["partitions"])
        ]
        if not unsettled:
            return {t["topic"]: len(t["partitions"]) for t in topics}
        if asyncio.get_running_loop().time() > deadline:
            raise TopicLayoutError(f"no partition leaders after {timeout_s}s for: {unsettled}")
        await asyncio.sleep(0.2)


async def ensure_topics(
    connection: KafkaConnection | str, specs: Iterable[TopicSpec], *, timeout_s: float = 60.0
) -> list[str]:
    """Create missing topics; return the names created. Raises ``TopicLayoutError`` when an
    existing topic's partition count differs from the catalogue's, or a missing one may not be
    created. A bare string for ``connection`` is a PLAINTEXT bootstrap list."""
    wanted = {spec.name: spec for spec in specs}
    connection = as_connection(connection)
    admin = _admin_client(connection)
    try:
        await start_client(admin.start(), connection, timeout_s)
        existing = await _partition_counts(admin, list(wanted))
        missing = [spec for name, spec in wanted.items() if name not in existing]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        spec.replication_factor,
                        topic_configs=spec.config_dict,
                    )
                    for spec in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code in {_TOPIC_AUTHORIZATION_FAILED, _CLUSTER_AUTHORIZATION_FAILED}:
                    raise TopicLayoutError(
                        f"topic {name} is missing and this user may not create it (error "
                        f"{code}): create it as an administrator, or grant the user CREATE "
                        "(and DESCRIBE) on it"
                    )
                elif code != _TOPIC_ALREADY_EXISTS:  # another worker won the race: fine
                    message = rest[0] if rest else ""
                    raise TopicLayoutError(f"could not create topic {name}: error {code} {message}")
        existing = await _settled_partition_counts(admin, list(wanted), timeout_s)
        wrong = {
            name: (existing.get(name), spec.partitions)
            for name, spec in wanted.items()
            if existing.get(name) != spec.partitions
        }
        if wrong:
            detail = "; ".join(
                f"{n} has {have} partitions, expected {want}" for n, (have, want) in wrong.items()
            )
            raise TopicLayoutError(
                f"{detail}. Set CCC_PARTITIONS to the existing count or recreate the topics: "
                "every topic must have the same partition count for lookups to be co-partitioned."
            )
        for name in created:
            log.info("created topic %s (%d partitions)", name, wanted[name].partitions)
        return created
    except KafkaError as exc:
        raise TopicLayoutError(f"could not inspect or create topics: {exc!r}") from exc
    finally:
        await admin.close()


async def config_drift(
    connection: KafkaConnection | str, specs: Iterable[TopicSpec], *, timeout_s: float = 60.0
) -> dict[str, list[str]]:
    """For each existing topic, how its partition count and declared configs differ from the
    catalogue (an empty list: as declared). Configs the catalogue does not declare are the
    operator's business and not reported. A bare string for ``connection`` is a PLAINTEXT
    bootstrap list."""
    wanted = {spec.name: spec for spec in specs}
    connection = as_connection(connection)
    admin = _admin_client(connection)
    try:
        await start_client(admin.start(), connection, timeout_s)
        counts = await _partition_counts(admin, list(wanted))
        drift: dict[str, list[str]] = {name: [] for name in counts}
        for name, count in counts.items():
            if count != wanted[name].partitions:
                drift[name].append(f"partitions is {count}, expected {wanted[name].partitions}")
        declared = [ConfigResource(ConfigResourceType.TOPIC, n) for n in counts if wanted[n].config]
        for response in await admin.describe_configs(declared) if declared else []:
            for _code, _message, _type, name, entries in response.resources:
                actual = {entry[0]: entry[1] for entry in entries}
                for key, value in wanted[name].config:
                    if actual.get(key) != value:
                        drift[name].append(f"{key} is {actual.get(key)}, expected {value}")
        return drift
    except KafkaError as exc:
        raise TopicLayoutError(f"could not describe topics: {exc!r}") from exc
    finally:
        await admin.close()
