"""A small aiokafka client that speaks the wire contract: what a platform or the authority feed
runs to publish events, and what a takedown consumer runs to read verdicts. Used by the demo,
the tests and the benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from topics.catalogue import Catalogue
from topics.codecs import AvroCodec


class GuardProducer:
    def __init__(self, bootstrap_servers: str, catalogue: Catalogue, codec: AvroCodec) -> None:
        self.catalogue, self.codec = catalogue, codec
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=5)

    async def __aenter__(self) -> GuardProducer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def listing_event(self, event: Mapping[str, Any]) -> None:
        await self._producer.send(
            self.catalogue.listing_events.name,
            key=str(event["listing_id"]).encode(),
            value=self.codec.encode("ListingEvent", event),
        )

    async def certificate_status(self, change: Mapping[str, Any]) -> None:
        await self._producer.send(
            self.catalogue.certificate_status.name,
            key=str(change["cert_no"]).encode(),
            value=self.codec.encode("CertificateStatusChanged", change),
        )

    async def raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await self._producer.send(topic, key=key, value=value)

    async def flush(self) -> None:
        await self._producer.flush()


async def read_records(
    bootstrap_servers: str,
    topic: str,
    codec: AvroCodec,
    record_name: str,
    *,
    from_beginning: bool = True,
) -> AsyncIterator[dict[str, Any]]:
    """Decoded records of ``topic``, forever; a fresh consumer group each call."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"ccc-guard-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async for message in consumer:
            yield codec.decode(record_name, message.value)
    finally:
        await consumer.stop()
