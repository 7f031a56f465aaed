"""Same verdicts whichever consistent partitioner put the platforms' and the authority's records
where they are: librdkafka's default (CRC32, through confluent-kafka at its defaults), Go
sarama's (FNV-1a), and Java's and aiokafka's (murmur2).

ccc-guard never finds state by hashing a key someone else partitioned: a listing's answers and
re-checks go back to the partition number its events came in on, and the authority's feed is
re-keyed onto ccc-guard's own partitioner before the certificate side reads it.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.builders import cert_no, listing_event, status_change
from tests.integration.harness import (
    CODEC,
    Deployment,
    Guard,
    Records,
    publish_confluent,
    running_guard,
)
from topics.partitioning import partition_for_key

PARTITIONS = 6
LIVE = {"ALLOW", "RESTORE"}


def fnv1a_partition(key: bytes, partitions: int) -> int:
    """sarama's default hash partitioner: 32-bit FNV-1a, as a signed int, modulo, made
    non-negative."""
    hashed = 0x811C9DC5
    for byte in key:
        hashed = ((hashed ^ byte) * 0x01000193) & 0xFFFFFFFF
    signed = hashed - (1 << 32) if hashed >= 1 << 31 else hashed
    return abs(signed) % partitions  # Go's % truncates towards zero, then the sign is dropped


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``consistent_random`` for keyed records."""
    return zlib.crc32(key) % partitions


def publish_aiokafka(
    bootstrap: str, records: Records, partitioner: Callable[[bytes, int], int] | None
) -> None:
    """aiokafka's default (murmur2), or the partition ``partitioner`` picks."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for topic, key, value in records:
                partition = None if partitioner is None else partitioner(key, PARTITIONS)
                await producer.send_and_wait(topic, key=key, value=value, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(run())


PUBLISHERS: dict[str, Callable[[str, Records], None]] = {
    "crc32-confluent-defaults": publish_confluent,
    "fnv1a-sarama": lambda bootstrap, records: publish_aiokafka(
        bootstrap, records, fnv1a_partition
    ),
    "murmur2-reference": lambda bootstrap, records: publish_aiokafka(bootstrap, records, None),
}
PARTITIONERS = {
    "crc32-confluent-defaults": crc32_partition,
    "fnv1a-sarama": fnv1a_partition,
    "murmur2-reference": partition_for_key,
}


def test_the_alternative_partitioners_really_place_keys_elsewhere() -> None:
    """Else the test below would prove nothing: most keys land on another partition than
    murmur2 puts them on (and than ccc-guard's own partitioner would look for them)."""
    keys = [f"L-{n:05d}".encode() for n in range(200)]
    for name in ("crc32-confluent-defaults", "fnv1a-sarama"):
        partitioner = PARTITIONERS[name]
        elsewhere = sum(
            partitioner(k, PARTITIONS) != partition_for_key(k, PARTITIONS) for k in keys
        )
        assert elsewhere > len(keys) // 2, name
        assert {partitioner(k, PARTITIONS) for k in keys} == set(range(PARTITIONS))
    # Known values: FNV-1a of "a" is 0xe40c292c (negative as int32), CRC32 of "a" is 0xe8b7be43.
    assert fnv1a_partition(b"a", 1000) == (2**32 - 0xE40C292C) % 1000
    assert crc32_partition(b"a", 1000) == 0xE8B7BE43 % 1000


@pytest.mark.parametrize("publisher", sorted(PUBLISHERS))
def test_verdicts_do_not_depend_on_the_producers_partitioner(
    kafka: str, tmp_path: Path, publisher: str
) -> None:
    rng = random.Random(12)
    certs = [cert_no() for _ in range(24)]
    claims = {f"L-p{n:03d}": rng.sample(certs, rng.choice((1, 1, 2))) for n in range(120)}
    revoked = set(certs[:6])
    deployment = Deployment(kafka, tmp_path, partitions=PARTITIONS)
    catalogue = deployment.catalogue
    publish = PUBLISHERS[publisher]

    def certificate_records(changes: list[dict[str, Any]]) -> Records:
        topic = catalogue.certificate_status.name
        return [
            (topic, c["cert_no"].encode(), CODEC.encode("CertificateStatusChanged", c))
            for c in changes
        ]

    with running_guard(deployment) as guard:
        publish(kafka, certificate_records([status_change(c) for c in certs]))
        topic = catalogue.listing_events.name
        publish(
            kafka,
            [
                (topic, lid.encode(), CODEC.encode("ListingEvent", listing_event(lid, claimed)))
                for lid, claimed in claims.items()
            ],
        )
        every_listing_live = dict.fromkeys(claims, True)
        assert _wait_for_final_state(guard, every_listing_live) == every_listing_live

        changes = [status_change(c, "REVOKED", 2) for c in sorted(revoked)]
        publish(kafka, certificate_records(changes))
        expected = {lid: not revoked.intersection(claimed) for lid, claimed in claims.items()}
        assert _wait_for_final_state(guard, expected) == expected

        verdicts = guard.verdicts.snapshot()
        per_event = [v for v in verdicts if v["trigger"] == "LISTING_EVENT"]
        assert sorted(v["listing_id"] for v in per_event) == sorted(claims)
        takedowns = {v["listing_id"] for v in verdicts if v["action"] == "TAKEDOWN"}
        assert takedowns == {lid for lid, live in expected.items() if not live}
        assert guard.deadletters.snapshot() == []


def _wait_for_final_state(
    guard: Guard, expected: dict[str, bool], timeout: float = 60.0
) -> dict[str, bool | None]:
    """Whether each listing is live by its latest verdict (None: no verdict yet), once that
    is ``expected`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        latest = {v["listing_id"]: v["action"] for v in guard.verdicts.snapshot()}
        state = {lid: None if lid not in latest else latest[lid] in LIVE for lid in expected}
        if state == expected or time.monotonic() > deadline:
            return state
        time.sleep(0.2)
