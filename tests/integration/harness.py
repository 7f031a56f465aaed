"""Running real workers and watching real topics, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.settings import Settings
from topics.admin import ensure_topics
from topics.catalogue import Catalogue, build_catalogue
from topics.codecs import AvroCodec

REPO = Path(__file__).resolve().parents[2]
CODEC = AvroCodec()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Deployment:
    """One isolated ccc-guard installation on the shared broker: its own app id, topic prefix
    and state directories."""

    bootstrap: str
    root: Path
    partitions: int = 4
    extra_env: Mapping[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    def env(self, worker_index: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CCC_")}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "CCC_APP_ID": self.name,
                "CCC_TOPIC_PREFIX": f"{self.name}.",
                "CCC_PARTITIONS": str(self.partitions),
                "CCC_DATA_DIR": str(self.root / f"worker-{worker_index}"),
                "CCC_WEB_PORT": str(free_port()),
                "CCC_EXPIRY_SWEEP_INTERVAL_SECONDS": "1",
                "CCC_PROGRESS_INTERVAL_SECONDS": "5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env(0))

    @property
    def catalogue(self) -> Catalogue:
        return build_catalogue(self.settings)

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.bootstrap, self.catalogue.all()))


class Worker:
    """A ``ccc-guard worker`` in its own process, as in production."""

    def __init__(self, deployment: Deployment, index: int = 0) -> None:
        self.deployment, self.index = deployment, index
        self.log_path = deployment.root / f"worker-{index}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CCC_WEB_PORT']}"

    def start(self, *, wait_ready: float = 90.0) -> Worker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {time.strftime('%X')} =====\n".encode())
            log.flush()
            self.env = self.deployment.env(self.index)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "-l", "info"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_for_log("[^Worker]: Ready", wait_ready)
        return self

    def _wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        offset = self.log_path.read_bytes().rfind(b"===== start")
        while time.monotonic() < deadline:
            if needle.encode() in self.log_path.read_bytes()[offset:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class TopicWatcher:
    """Collects every record of a topic, decoded, on a background thread."""

    def __init__(self, bootstrap: str, topic: str, record_name: str, partitions: int) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._args = (bootstrap, topic, record_name, partitions)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError(f"could not start watching {topic}")

    async def _run(self) -> None:
        bootstrap, topic, record_name, partitions = self._args
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                for messages in batches.values():
                    for message in messages:
                        record = CODEC.decode(record_name, message.value)
                        record["_key"] = message.key
                        with self._lock:
                            self.records.append(record)
        finally:
            await consumer.stop()

    def snapshot(
        self, where: Callable[[dict[str, Any]], bool] = lambda r: True
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.records if where(r)]

    def wait_for(
        self,
        where: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """The matching records once there are at least ``count``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.snapshot(where)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} matching records, got {len(found)}: {found}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Feed:
    """Publishes wire records, as a platform and the authority would."""

    def __init__(self, bootstrap: str, catalogue: Catalogue) -> None:
        self.bootstrap, self.catalogue = bootstrap, catalogue

    def _send(self, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
        async def run() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, max_request_size=8 << 20)
            await producer.start()
            try:
                for topic, key, value in records:
                    await producer.send_and_wait(topic, key=key, value=value)
            finally:
                await producer.stop()

        asyncio.run(run())

    def listings(self, *events: dict[str, Any]) -> None:
        topic = self.catalogue.listing_events.name
        self._send(
            [(topic, e["listing_id"].encode(), CODEC.encode("ListingEvent", e)) for e in events]
        )

    def certificates(self, *changes: dict[str, Any]) -> None:
        topic = self.catalogue.certificate_status.name
        self._send(
            [
                (topic, c["cert_no"].encode(), CODEC.encode("CertificateStatusChanged", c))
                for c in changes
            ]
        )

    def raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._send([(topic, key, value)])


@dataclass
class Guard:
    """A running deployment: workers, a feed, and watchers on its output topics."""

    deployment: Deployment
    workers: list[Worker]
    feed: Feed
    verdicts: TopicWatcher
    deadletters: TopicWatcher

    def verdicts_of(self, listing: str) -> list[dict[str, Any]]:
        return self.verdicts.snapshot(lambda r: r["listing_id"] == listing)

    def wait_verdicts(
        self, listing: str, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        return self.verdicts.wait_for(lambda r: r["listing_id"] == listing, count, timeout)


@contextmanager
def running_guard(deployment: Deployment, workers: int = 1) -> Iterator[Guard]:
    deployment.create_topics()
    started: list[Worker] = []
    catalogue = deployment.catalogue
    verdicts = TopicWatcher(
        deployment.bootstrap, catalogue.verdicts.name, "ListingVerdict", deployment.partitions
    )
    deadletters = TopicWatcher(
        deployment.bootstrap, catalogue.deadletter.name, "DeadLetter", deployment.partitions
    )
    try:
        for index in range(workers):
            started.append(Worker(deployment, index).start())
        yield Guard(
            deployment, started, Feed(deployment.bootstrap, catalogue), verdicts, deadletters
        )
    finally:
        for worker in started:
            if worker.alive:
                worker.stop()
        verdicts.close()
        deadletters.close()
