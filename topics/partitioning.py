"""Which partition a key lands on: Kafka's default partitioner (murmur2), as every client that
produces to ccc-guard's topics uses it (Java's, aiokafka's, librdkafka's ``murmur2_random``).

ccc-guard needs it where it routes one record for many keys: a batch of re-checks goes to the
partition its listings live on, so the listing side writes their state in the right place.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for_key(key: bytes, partitions: int) -> int:
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
