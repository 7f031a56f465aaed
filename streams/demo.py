"""``ccc-guard demo``: a local broker, a worker, and a synthetic platform + authority feed, with
verdicts printed as they arrive. Development only: the worker never imports this module."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.settings import Settings
from topics.admin import ensure_topics
from topics.catalogue import build_catalogue
from topics.client import GuardProducer, read_records
from topics.codecs import AvroCodec
from topics.connection import KafkaConnection

PLATFORMS = ("taobao", "jd", "douyin", "kuaishou", "pinduoduo")
# (category code, product) pairs from the CCC catalogue, for believable listings.
PRODUCTS = (
    ("0907", "USB-C charger 65W"),
    ("0901", "laptop computer"),
    ("1606", "5G mobile phone"),
    ("0706", "electric water heater"),
    ("0713", "washing machine"),
    ("0911", "power bank 20000mAh"),
)
_DAY_MS = 86_400_000
DEMO_DIR = ".ccc-guard-demo"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def cert_number(rng: random.Random, category: str) -> str:
    return f"{rng.randint(2016, 2024)}01{category}{rng.randint(0, 999_999):06d}"


def certificate(
    cert_no: str, category: str, product: str, status: str, version: int, at_ms: int
) -> dict[str, Any]:
    today = at_ms // _DAY_MS
    return {
        "cert_no": cert_no,
        "status": status,
        "version": version,
        "holder": "Shenzhen Demo Electronics Co., Ltd.",
        "manufacturer": "Shenzhen Demo Electronics Co., Ltd.",
        "factory": "Dongguan Demo Factory",
        "product_name": product,
        "category_code": category,
        "models": ["DM-1", "DM-2"],
        "issued_on": today - 400,
        "expires_on": today - 400 + 5 * 365,
        "certification_body": "China Quality Certification Centre",
        "reason": None if status == "VALID" else "annual surveillance not passed",
        "changed_at": at_ms,
    }


@dataclasses.dataclass
class DemoFeed:
    """A seeded stream of listing events and certificate changes, with some bad input."""

    seed: int
    certificates: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    versions: dict[str, int] = dataclasses.field(default_factory=dict)
    listings: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for _ in range(24):
            category, product = self.rng.choice(PRODUCTS)
            self.certificates.append((cert_number(self.rng, category), category, product))

    def initial_certificates(self) -> Iterator[dict[str, Any]]:
        for cert_no, category, product in self.certificates:
            self.versions[cert_no] = 1
            yield certificate(cert_no, category, product, "VALID", 1, now_ms())

    def listing_event(self, n: int) -> dict[str, Any]:
        rng = self.rng
        if self.listings and rng.random() < 0.15:
            listing_id = rng.choice(list(self.listings))
            event_type = "DELISTED" if rng.random() < 0.3 else "UPDATED"
        else:
            listing_id, event_type = f"L-{n:06d}", "CREATED"
        cert_no, category, product = rng.choice(self.certificates)
        certs = [cert_no]
        roll = rng.random()
        if roll < 0.04:
            certs = []  # no certificate at all
        elif roll < 0.08:
            certs = [cert_no.replace("0", "O", 1)]  # letter O for zero: a typo, not a number
        elif roll < 0.11:
            certs = [cert_number(rng, category)]  # well-formed but never issued
        elif roll < 0.14:
            category = "0713" if category != "0713" else "0907"  # wrong product category
        elif roll < 0.30:
            certs.append(rng.choice(self.certificates)[0])
        shop = f"S-{rng.randint(1, 40):03d}"
        platform = self.listings.get(listing_id, (rng.choice(PLATFORMS), ""))[0]
        if event_type == "DELISTED":
            self.listings.pop(listing_id, None)
        else:
            self.listings[listing_id] = (platform, shop)
        return {
            "event_id": f"E-{self.seed}-{n:07d}",
            "event_type": event_type,
            "platform": platform,
            "listing_id": listing_id,
            "shop_id": shop,
            "title": f"{product} (demo)",
            "category_code": category,
            "brand": "DemoBrand",
            "model": "DM-1",
            "cert_numbers": certs,
            "occurred_at": now_ms(),
        }

    def status_change(self) -> dict[str, Any]:
        cert_no, category, product = self.rng.choice(self.certificates)
        self.versions[cert_no] += 1
        status = self.rng.choice(("SUSPENDED", "REVOKED", "VALID", "VALID", "CANCELLED"))
        return certificate(cert_no, category, product, status, self.versions[cert_no], now_ms())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def format_verdict(v: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(v["decided_at"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    why = ",".join(v["reasons"]) or "-"
    failing = f" failing={','.join(v['failing_certs'])}" if v["failing_certs"] else ""
    return (
        f"{at} {v['action']:8} {v['platform']:9} {v['listing_id']:9} {why}{failing}"
        f"  [{v['trigger']} {v['trigger_id']}]"
    )


async def _print_verdicts(settings: Settings, codec: AvroCodec) -> None:
    catalogue = build_catalogue(settings)
    async for verdict in read_records(
        KafkaConnection.from_settings(settings), catalogue.verdicts.name, codec, "ListingVerdict"
    ):
        print(format_verdict(verdict), flush=True)


async def _feed(settings: Settings, codec: AvroCodec, rate: float, seed: int) -> None:
    feed = DemoFeed(seed)
    catalogue = build_catalogue(settings)
    connection = KafkaConnection.from_settings(settings)
    async with GuardProducer(connection, catalogue, codec) as producer:
        for change in feed.initial_certificates():
            await producer.certificate_status(change)
        n = 0
        while True:
            n += 1
            await producer.listing_event(feed.listing_event(n))
            if n % 40 == 0:
                change = feed.status_change()
                cert, status, version = change["cert_no"], change["status"], change["version"]
                print(f"--- authority: {cert} is now {status} (v{version})")
                await producer.certificate_status(change)
            if n % 250 == 0:
                print("--- feeding one undecodable record: it goes to the dead-letter topic")
                await producer.raw(catalogue.listing_events.name, b"L-garbage", b"not avro")
            await asyncio.sleep(1 / rate)


async def run_demo(settings: Settings, *, duration: float, rate: float, seed: int) -> None:
    codec = AvroCodec()
    with contextlib.ExitStack() as stack:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            from localkafka import LocalKafka

            print("starting a local Apache Kafka broker (the first run fetches it with mvn)...")
            broker = stack.enter_context(LocalKafka())
            settings = dataclasses.replace(settings, bootstrap_servers=broker.bootstrap_servers)
        print(f"broker: {settings.bootstrap_servers}")
        await ensure_topics(
            KafkaConnection.from_settings(settings), build_catalogue(settings).all()
        )

        # Kept after the run so the worker's log can be read; the broker is new each run, so
        # the worker's state from a previous run is stale and goes.
        workdir = Path(DEMO_DIR).resolve()
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        log_path = workdir / "worker.log"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CCC_DATA_DIR": str(workdir / "data"),
            "CCC_WEB_PORT": str(_free_port()),
            "CCC_EXPIRY_SWEEP_INTERVAL_SECONDS": "10",
            "CCC_PROGRESS_INTERVAL_SECONDS": "10",
        }
        log_file = stack.enter_context(log_path.open("wb"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", "info"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        print(
            f"worker pid {worker.pid}, log: {log_path}, metrics: http://127.0.0.1:{env['CCC_WEB_PORT']}/"
        )
        tasks = [
            asyncio.ensure_future(_print_verdicts(settings, codec)),
            asyncio.ensure_future(_feed(settings, codec, rate, seed)),
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=duration or None, return_when=asyncio.FIRST_EXCEPTION
            )
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
            print(f"demo stopped; worker exit code {worker.returncode}")
