"""Topic creation at start: missing topics appear as declared; a mismatching one stops the start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.errors import TopicLayoutError
from tests.integration.harness import REPO, Deployment, Worker
from topics.admin import config_drift, ensure_topics


async def _describe(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


def test_missing_topics_are_created_with_the_catalogue_partitions(
    kafka: str, tmp_path: Path
) -> None:
    deployment = Deployment(kafka, tmp_path, partitions=3)
    specs = deployment.catalogue.all()
    created = asyncio.run(ensure_topics(kafka, specs))
    assert sorted(created) == sorted(spec.name for spec in specs)
    assert asyncio.run(_describe(kafka, created)) == {name: 3 for name in created}
    assert asyncio.run(ensure_topics(kafka, specs)) == []  # idempotent


def test_a_topic_with_another_partition_count_refuses_the_start(kafka: str, tmp_path: Path) -> None:
    deployment = Deployment(kafka, tmp_path, partitions=4)
    events = deployment.catalogue.listing_events.name

    async def create_wrong() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(events, 2, 1)])
        finally:
            await admin.close()

    asyncio.run(create_wrong())
    with pytest.raises(TopicLayoutError, match=f"{events} has 2 partitions, expected 4"):
        asyncio.run(ensure_topics(kafka, deployment.catalogue.all()))
    # The worker itself stops with that message instead of running mis-partitioned.
    worker = Worker(deployment).launch()
    assert worker.wait_exit(timeout=120) != 0
    assert "has 2 partitions, expected 4" in worker.output()


def test_drift_from_the_catalogue_is_reported(kafka: str, tmp_path: Path) -> None:
    deployment = Deployment(kafka, tmp_path, partitions=2)
    catalogue = deployment.catalogue
    status = catalogue.certificate_status.name

    async def create_status_topic_uncompacted() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(status, 2, 1, topic_configs={"cleanup.policy": "delete"})]
            )
        finally:
            await admin.close()

    asyncio.run(create_status_topic_uncompacted())
    asyncio.run(ensure_topics(kafka, catalogue.all()))
    drift = asyncio.run(config_drift(kafka, catalogue.all()))
    assert drift[status] == ["cleanup.policy is delete, expected compact"]
    assert all(not found for name, found in drift.items() if name != status)
    assert set(drift) == {spec.name for spec in catalogue.all()}
    # The subcommand prints the same.
    listing = subprocess.run(
        [sys.executable, "-m", "streams.cli", "topics"],
        cwd=REPO,
        env=deployment.env(0),
        capture_output=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert b"DRIFT: cleanup.policy is delete, expected compact" in listing.stdout
