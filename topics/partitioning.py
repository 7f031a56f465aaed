"""ccc-guard's own partitioner: Kafka's default (murmur2), as Java's and aiokafka's clients
hash keys.

Used only for the topics ccc-guard alone writes, keyed by cert_no (certificate changes and
commands), so that the certificate side finds a certificate's state on the partition it reads.
Never for locating state by a key someone else partitioned: listing partitions are whatever
the platforms' producers chose, and ccc-guard addresses them by number.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for_key(key: bytes, partitions: int) -> int:
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
