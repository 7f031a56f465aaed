"""The internal topics' codec: round trips, and garbage refused with the project's error."""

from __future__ import annotations

import contextlib
import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.errors import MalformedBodyError
from streams.join_protocol import (
    Answer,
    Expire,
    Subscribe,
    Unsubscribe,
    decode_command,
    decode_update,
    encode_command,
    encode_update,
)
from streams.model import CertificateStatus, CertTrigger, CertView, VerdictTrigger
from topics.partitioning import partition_for_key

VIEW = CertView(CertificateStatus.SUSPENDED, 7, None, 21_000)


@pytest.mark.parametrize(
    "command", [Subscribe(3, "t"), Unsubscribe(0, "t2"), Expire(1_790_000_000_000)]
)
def test_commands_round_trip(command: Subscribe | Unsubscribe | Expire) -> None:
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    "update",
    [
        Answer("2017010907948411", None, "t"),
        Answer("2017010907948411", VIEW, "t"),
        CertTrigger("2017010907948411", VIEW, VerdictTrigger.CERTIFICATE_EXPIRY, "x@expiry", 5),
    ],
)
def test_updates_round_trip(update: Answer | CertTrigger) -> None:
    assert decode_update(encode_update(update)) == update


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'["S"]',
        b'["S", 0, ""]',
        b'["S", "0", "t"]',
        b'["S", -1, "t"]',
        b'["S", true, "t"]',
        b'["S", 1]',
        b'["U", 1]',
        b'["X", "L"]',
        b'["E", "soon"]',
        b"{}",
        b"\xff",
    ],
)
def test_bad_commands_raise_malformed_body(data: bytes) -> None:
    with pytest.raises(MalformedBodyError):
        decode_command(data)


@pytest.mark.parametrize(
    "data",
    [
        b'["A", "c"]',
        b'["A", "c", ["NOPE", 1, null, 2]]',
        b'["A", "c", ["VALID", "1", null, 2]]',
        b'["R", "c", ["VALID", 1, null, 2], "LISTING", "t", 1]',
        b'["R", "c", null, "CERTIFICATE_CHANGE", "t", 1]',
        b'["R", "c", ["VALID", 1, null, 2], "CERTIFICATE_CHANGE", "t", true]',
        b'["M", "c", ["VALID", 1, null, 2], "CERTIFICATE_CHANGE", "t", 1, ["L-1"]]',
    ],
)
def test_bad_updates_raise_malformed_body(data: bytes) -> None:
    with pytest.raises(MalformedBodyError):
        decode_update(data)


def test_random_bytes_never_raise_anything_else() -> None:
    rng = random.Random(2026)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 40))
        for decode in (decode_command, decode_update):
            with contextlib.suppress(MalformedBodyError):
                decode(data)


def test_partition_for_key_agrees_with_the_clients_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    rng = random.Random(7)
    for partitions in (1, 4, 12, 50):
        for _ in range(200):
            key = rng.randbytes(rng.randint(0, 40))
            want = partitioner(key, list(range(partitions)), list(range(partitions)))
            assert partition_for_key(key, partitions) == want
