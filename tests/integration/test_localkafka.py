"""The local broker is a real Kafka: topics, produce/consume round trips, restarts keep data."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from localkafka import LocalKafka

_UNKNOWN_TOPIC_OR_PARTITION = 3
_CONSUME_TIMEOUT_S = 30.0


def _topic_name(purpose: str) -> str:
    # Unique per test run: against an external KAFKA_BOOTSTRAP_SERVERS broker topics persist.
    return f"localkafka-test-{purpose}-{uuid.uuid4().hex[:12]}"


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1)]
        )
    finally:
        await admin.close()
    errors = [
        (entry["topic"], entry["error_code"])
        for entry in response.to_object()["topic_errors"]
        if entry["error_code"] != 0
    ]
    assert not errors, f"create_topics failed: {errors}"


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for index, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(index).encode())
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    # No group: reading from the earliest offset must not depend on committed offsets.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CONSUME_TIMEOUT_S
        while len(received) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.extend(record.value for record in records)
    finally:
        await consumer.stop()
    return received


async def _topic_exists(bootstrap: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # A metadata request for one topic asks the broker to auto-create it when allowed.
        described = await admin.describe_topics([topic])
        listed = await admin.list_topics()
    finally:
        await admin.close()
    assert [entry["error_code"] for entry in described] == [_UNKNOWN_TOPIC_OR_PARTITION]
    return topic in listed


async def _round_trip(bootstrap: str, topic: str, values: list[bytes]) -> list[bytes]:
    await _create_topic(bootstrap, topic)
    await _produce(bootstrap, topic, values)
    return await _consume(bootstrap, topic, len(values))


def test_produce_and_consume_round_trip(kafka: str) -> None:
    topic = _topic_name("roundtrip")
    values = [b"first", b"second", b"third"]

    assert asyncio.run(_round_trip(kafka, topic, values)) == values


def test_missing_topic_is_not_auto_created(kafka: str) -> None:
    topic = _topic_name("missing")

    assert asyncio.run(_topic_exists(kafka, topic)) is False


def test_restart_keeps_ports_and_data(tmp_path: Path) -> None:
    topic = _topic_name("restart")
    values = [b"one", b"two", b"three"]

    with LocalKafka(workdir=tmp_path / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        asyncio.run(_create_topic(bootstrap, topic))
        asyncio.run(_produce(bootstrap, topic, values))

        broker.stop()
        broker.stop()  # idempotent
        assert not broker.is_running
        broker.start()

        assert broker.bootstrap_servers == bootstrap
        assert asyncio.run(_consume(bootstrap, topic, len(values))) == values

        # A crash (SIGKILL) must not lose acknowledged records either: they are in the page
        # cache, and the restarted broker recovers the unflushed segment.
        broker.kill()
        assert not broker.is_running
        broker.start()

        assert broker.bootstrap_servers == bootstrap
        assert asyncio.run(_consume(bootstrap, topic, len(values))) == values


def test_session_broker_can_be_restarted(kafka: str, kafka_broker: LocalKafka) -> None:
    topic = _topic_name("session-restart")
    values = [b"before", b"restart", b"after"]
    asyncio.run(_create_topic(kafka, topic))
    asyncio.run(_produce(kafka, topic, values[:2]))

    assert kafka_broker.bootstrap_servers == kafka
    kafka_broker.stop()
    kafka_broker.start()

    asyncio.run(_produce(kafka, topic, values[2:]))
    assert asyncio.run(_consume(kafka, topic, len(values))) == values
