"""A worker on a secured broker: SASL_SSL with SCRAM-SHA-512, TLS from a private CA, ACLs.

The module runs its own ``LocalKafka`` in secured mode (the session broker is plaintext). An
administrator creates the external topics and grants the worker's user exactly
``topics.acls.worker_grants``; the worker then creates its own internal topics, decides a listing
end to end, and its user is refused everything else. A wrong password stops the worker at once
with a clear message, and no password ever shows in a log or in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from localkafka import LocalKafka
from localkafka.broker import ADMIN_USER, SCRAM_MECHANISM
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.builders import cert_no, listing_event, listing_id, status_change
from tests.integration.harness import CODEC, REPO, Deployment, Worker, stop_all
from topics.acls import worker_grants
from topics.admin import ensure_topics
from topics.catalogue import Catalogue
from topics.client import GuardProducer
from topics.config import Secret
from topics.connection import KafkaConnection

WORKER_USER = "ccc-worker"
_TOPIC_AUTHORIZATION_FAILED = 29


@dataclass
class SecureSetup:
    broker: LocalKafka
    admin: KafkaConnection
    worker_password: str
    deployment: Deployment
    catalogue: Catalogue

    def worker_connection(self) -> KafkaConnection:
        """What the worker connects with, for trying what its user may not do."""
        return KafkaConnection(
            bootstrap_servers=self.broker.sasl_bootstrap_servers,
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=WORKER_USER,
            sasl_password=Secret(self.worker_password),
            ssl_context=self.admin.ssl_context,
        )


def _security_env(broker: LocalKafka, password_file: Path) -> dict[str, str]:
    return {
        "CCC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CCC_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
        "CCC_KAFKA_SASL_USERNAME": WORKER_USER,
        "CCC_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "CCC_KAFKA_SSL_CAFILE": str(broker.ca_file),
    }


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureSetup]:
    root = tmp_path_factory.mktemp("secure")
    password = secrets.token_urlsafe(18)
    with LocalKafka(scram_users={WORKER_USER: password}) as broker:
        admin = KafkaConnection.from_config(
            Settings.from_env(
                {
                    "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap_servers,
                    "CCC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                    "CCC_KAFKA_SASL_USERNAME": ADMIN_USER,
                    "CCC_KAFKA_SASL_PASSWORD": broker.admin_password,
                    "CCC_KAFKA_SSL_CAFILE": str(broker.ca_file),
                }
            ).connection_config()
        )
        password_file = root / "worker.password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        deployment = Deployment(
            broker.sasl_bootstrap_servers,
            root,
            partitions=2,
            extra_env=_security_env(broker, password_file),
        )
        catalogue = deployment.catalogue
        # The administrator creates the external topics; the worker creates its own.
        asyncio.run(ensure_topics(admin, [*catalogue.inputs(), *catalogue.outputs()]))
        grants = worker_grants(catalogue, deployment.name)
        with concurrent.futures.ThreadPoolExecutor(len(grants)) as pool:
            # One JVM per kafka-acls run (~1.5 s each), side by side.
            list(
                pool.map(
                    broker.acl_command,
                    [grant.kafka_acls_args(f"User:{WORKER_USER}") for grant in grants],
                )
            )
        yield SecureSetup(broker, admin, password, deployment, catalogue)


@pytest.fixture(scope="module")
def secure_worker(secure: SecureSetup) -> Iterator[Worker]:
    worker = Worker(secure.deployment).start()
    try:
        yield worker
    finally:
        stop_all([worker])


async def _read_verdicts(
    connection: KafkaConnection, topic: str, partitions: int, listing_id: str, timeout: float
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(**connection.aiokafka_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                found = [CODEC.decode("ListingVerdict", m.value) for m in messages]
                found = [v for v in found if v["listing_id"] == listing_id]
                if found:
                    return found
        return []
    finally:
        await consumer.stop()


def test_a_worker_on_sasl_ssl_decides_a_listing_end_to_end(
    secure: SecureSetup, secure_worker: Worker
) -> None:
    cert, listing = cert_no(), listing_id()

    async def feed() -> None:
        # The feed and the reader are the administrator: the worker's user may not produce
        # to its inputs nor read its outputs.
        async with GuardProducer(secure.admin, secure.catalogue, CODEC) as producer:
            await producer.certificate_status(status_change(cert))
            await producer.listing_event(listing_event(listing, [cert]))
            await producer.flush()

    asyncio.run(feed())
    topic = secure.catalogue.verdicts.name
    verdicts = asyncio.run(_read_verdicts(secure.admin, topic, 2, listing, timeout=30))
    assert [v["action"] for v in verdicts] == ["ALLOW"], secure_worker.log_tail()

    async def existing(names: list[str]) -> set[str]:
        admin = AIOKafkaAdminClient(**secure.admin.aiokafka_kwargs())
        await admin.start()
        try:
            return {t["topic"] for t in await admin.describe_topics(names) if t["error_code"] == 0}
        finally:
            await admin.close()

    # The administrator made only the external topics: the worker created its own internal
    # topics and changelogs with the Create it holds on its prefix.
    internal = [spec.name for spec in secure.catalogue.all()]
    assert asyncio.run(existing(internal)) == set(internal)


def test_the_workers_user_may_do_nothing_else(secure: SecureSetup, secure_worker: Worker) -> None:
    worker = secure.worker_connection()
    catalogue = secure.catalogue

    async def produce_to_an_input() -> None:
        producer = AIOKafkaProducer(**worker.aiokafka_kwargs(), request_timeout_ms=10_000)
        await producer.start()
        try:
            await producer.send_and_wait(catalogue.certificate_status.name, b"forged")
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(produce_to_an_input())

    async def read_the_verdicts() -> None:
        consumer = AIOKafkaConsumer(**worker.aiokafka_kwargs(), enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(catalogue.verdicts.name, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(read_the_verdicts())

    async def join_another_group() -> None:
        consumer = AIOKafkaConsumer(
            catalogue.listing_events.name,
            **worker.aiokafka_kwargs(),
            group_id=f"not-{secure.deployment.name}",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()

    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(join_another_group())

    async def create_topics() -> dict[str, int]:
        admin = AIOKafkaAdminClient(**worker.aiokafka_kwargs())
        await admin.start()
        try:
            response = await admin.create_topics(
                [
                    NewTopic(f"unrelated-{uuid.uuid4().hex[:8]}", 1, 1),
                    NewTopic(f"{secure.deployment.name}-scratch", 1, 1),
                ]
            )
            return {name: code for name, code, *_ in response.topic_errors}
        finally:
            await admin.close()

    codes = asyncio.run(create_topics())
    assert sorted(codes.values()) == [0, _TOPIC_AUTHORIZATION_FAILED], codes
    assert codes[f"{secure.deployment.name}-scratch"] == 0  # its own prefix: allowed


def test_a_wrong_password_stops_the_worker_at_once_with_a_clear_error(
    secure: SecureSetup, tmp_path: Path
) -> None:
    wrong = secrets.token_urlsafe(18)
    env = secure.deployment.env(1)
    del env["CCC_KAFKA_SASL_PASSWORD_FILE"]
    env["CCC_KAFKA_SASL_PASSWORD"] = wrong
    env["CCC_DATA_DIR"] = str(tmp_path / "data")
    worker = WorkerProcess(env, tmp_path / "worker.log", log_level="debug", cwd=REPO)
    started = time.monotonic()
    returncode = worker.launch().wait_exit(timeout=60)
    elapsed = time.monotonic() - started
    output = worker.output()
    assert returncode != 0, output
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert f"authentication failed for user '{WORKER_USER}' with SCRAM-SHA-512" in output
    assert wrong not in output
    assert secure.worker_password not in output
    # At DEBUG aiokafka logs every request: the SASL exchange shows only its type.
    assert "SaslAuthenticateRequest_v1(<redacted>)" in output


def test_no_password_in_the_log_or_metrics(secure: SecureSetup, secure_worker: Worker) -> None:
    with urllib.request.urlopen(f"{secure_worker.web_url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert "ccc_guard_ready" in metrics
    log = secure_worker.log_path.read_text(errors="replace")
    assert "SASL_SSL, SCRAM-SHA-512 as user 'ccc-worker'" in log
    for secret in (secure.worker_password, secure.broker.admin_password):
        assert secret not in log
        assert secret not in metrics
