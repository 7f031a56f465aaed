"""``python -m bench [--quick]``: ccc-guard against the real local broker, one table of results.

Stages, in one run on one machine:
1. pre-fill the input topics with the data set (``bench/dataset.py``);
2. passthrough anchor: a minimal aiokafka program consumes the listing events, decodes the Avro,
   encodes an output record and produces it — the practical ceiling for Python here;
   and, on the same broker, Faust's own floors: an agent that only iterates, and one that
   takes batches and hands records to the producer unawaited (``bench/faust_floor.py``);
3. verification throughput: one worker from ready to the last listing verdict;
4. latency at several offered loads (500, 1,000, 2,000 events/s and 70 % of the capacity just
   measured), worker warm: event time → verdict received; a load above the measured capacity
   is reported as over capacity, not as a latency;
5. revocation fan-out of the hottest certificate: status change → last TAKEDOWN;
6. recovery: a restarted worker to ready over the state, with RocksDB, then with memory://;
7. peak RSS of the worker over the run.
Progress goes to stderr; the table to stdout, ``bench/results-<profile>.json`` and a plot,
``bench/results-<profile>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.dataset import FULL, QUICK, DataSet, Profile
from localkafka import LocalKafka
from streams.clock import wall_clock_ms
from streams.settings import Settings
from streams.worker_process import WorkerProcess, inherited_env
from topics.admin import ensure_topics
from topics.catalogue import Catalogue, build_catalogue
from topics.codecs import AvroCodec
from topics.connection import KafkaConnection

REPO = Path(__file__).resolve().parents[1]
CODEC = AvroCodec()
# Recovery with memory:// replays every changelog: 417 s on the full profile.
_READY_TIMEOUT_S = 600.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%X')}] {message}", file=sys.stderr, flush=True)


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """As fast as the client goes: no await per record, big batches."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    count = 0
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, key=key, value=value))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def passthrough(bootstrap: str, source: str, target: str, expected: int) -> float:
    """The anchor: consume, decode, encode, produce; events per second."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"bench-passthrough-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    seen, started = 0, 0.0
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batches.values():
                if not started:
                    started = time.monotonic()
                for message in messages:
                    event = CODEC.decode("ListingEvent", message.value)
                    verdict = {
                        "verdict_id": event["event_id"],
                        "listing_id": event["listing_id"],
                        "platform": event["platform"],
                        "shop_id": event["shop_id"],
                        "action": "ALLOW",
                        "reasons": [],
                        "cert_numbers": event["cert_numbers"],
                        "failing_certs": [],
                        "trigger": "LISTING_EVENT",
                        "trigger_id": event["event_id"],
                        "event_time": event["occurred_at"],
                        "decided_at": event["occurred_at"],
                    }
                    await producer.send(
                        target, key=message.key, value=CODEC.encode("ListingVerdict", verdict)
                    )
                    seen += 1
        await producer.flush()
        return expected / (time.monotonic() - started)
    finally:
        await consumer.stop()
        await producer.stop()


class BenchWorker(WorkerProcess):
    """A worker whose peak RSS is sampled and whose metrics are read while it runs."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path, cwd=REPO)
        self.peak_rss_mb = 0.0

    def launch(self) -> Self:
        super().launch()
        threading.Thread(target=self._watch_rss, daemon=True).start()
        return self

    def _watch_rss(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while self.alive:
            try:
                match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            except OSError:
                return
            if match:
                self.peak_rss_mb = max(self.peak_rss_mb, int(match[1]) / 1024)
            time.sleep(0.2)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.web_url}/metrics", timeout=10) as response:
            text: str = response.read().decode()
            return text

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            series, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def wait_idle(self, timeout: float = 180.0) -> None:
        """Until every input is consumed and committed (lag 0 twice in a row): a latency stage
        must not measure the queue an earlier stage left behind (internal messages still in
        flight after the last verdict, say)."""
        deadline, zero = time.monotonic() + timeout, 0
        while zero < 2:
            if time.monotonic() > deadline:
                log(f"worker still lagging after {timeout:.0f}s; measuring anyway")
                return
            zero = zero + 1 if self.sample("ccc_guard_consumer_lag") == 0 else 0
            time.sleep(1.0)

    def wait_for(self, name: str, at_least: float, timeout: float, **labels: str) -> float:
        started = time.monotonic()
        while self.sample(name, **labels) < at_least:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{name}{labels} stayed below {at_least} after {timeout}s")
            if not self.alive:
                raise RuntimeError(f"worker exited; end of {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.25)  # each scrape costs the worker CPU: don't measure the measuring
        return time.monotonic()


LATENCY_RATES = (500, 1000, 2000)


@dataclasses.dataclass(frozen=True)
class LatencyPoint:
    offered_per_s: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    over_capacity: bool = False

    @classmethod
    def of(cls, rate: int, seconds: list[float]) -> LatencyPoint:
        return cls(
            rate,
            round(statistics.median(seconds) * 1000, 1),
            round(percentile(seconds, 0.99) * 1000, 1),
            round(max(seconds) * 1000, 1),
        )


def faust_floors(bootstrap: str, workdir: Path, records: int) -> dict[str, float]:
    """Faust's own ceiling on this broker, in this run (see ``bench/faust_floor.py``)."""
    from bench import faust_floor  # it imports this module's helpers

    asyncio.run(faust_floor.prepare(bootstrap, records))
    return {
        mode: faust_floor.faust_agent_rate(bootstrap, workdir, mode, records)
        for mode in ("iterate", "batched_send")
    }


async def latency_stage(
    bootstrap: str,
    catalogue: Catalogue,
    data: DataSet,
    rate: int,
    seconds: int,
    first_id: int = 0,
) -> list[float]:
    """Offer ``rate`` new listings a second; latency = verdict received - event time."""
    import random

    consumer = AIOKafkaConsumer(
        catalogue.verdicts.name,
        bootstrap_servers=bootstrap,
        group_id=f"bench-latency-{time.time_ns()}",
        auto_offset_reset="latest",
    )
    await consumer.start()
    await asyncio.sleep(2)  # let the group settle before offering load
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    sent: set[str] = set()
    latencies: list[float] = []
    total = rate * seconds

    async def offer() -> None:
        rng = random.Random(7)
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            n = first_id + i
            event = data.listing(100_000_000 + n, rng, occurred_at=wall_clock_ms())
            event["listing_id"] = f"LAT-{n:09d}"
            event["event_id"] = f"LAT-E-{n}"
            sent.add(event["event_id"])
            await producer.send(
                catalogue.listing_events.name,
                key=event["listing_id"].encode(),
                value=CODEC.encode("ListingEvent", event),
            )

    async def receive() -> None:
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=200)
            now = wall_clock_ms()
            for messages in batches.values():
                for message in messages:
                    verdict = CODEC.decode("ListingVerdict", message.value)
                    if verdict["trigger_id"] in sent and verdict["trigger"] == "LISTING_EVENT":
                        latencies.append((now - verdict["event_time"]) / 1000)

    try:
        await asyncio.wait_for(asyncio.gather(offer(), receive()), seconds * 3 + 60)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(profile: Profile, overrides: dict[str, str]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "profile": profile.name,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": overrides,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "data": {
            "certificates": profile.certificates,
            "listings": profile.listings,
            "hot_certificate_claims": profile.hot_claims,
        },
    }
    data = DataSet(profile)
    workdir = Path(tempfile.mkdtemp(prefix="ccc-guard-bench-"))
    with LocalKafka() as broker:
        bootstrap = broker.bootstrap_servers
        app_id = f"bench-{time.time_ns() % 10**8}"
        env = inherited_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "CCC_APP_ID": app_id,
                "CCC_DATA_DIR": str(workdir / "data"),
                "CCC_PROGRESS_INTERVAL_SECONDS": "10",
                **overrides,
            }
        )
        settings = Settings.from_env(env)
        catalogue = build_catalogue(settings.topic_naming())
        scratch = dataclasses.replace(catalogue.verdicts, name="bench.passthrough")
        connection = KafkaConnection.from_config(settings.connection_config())
        asyncio.run(ensure_topics(connection, [*catalogue.all(), scratch]))

        log(f"pre-filling {profile.certificates} certificates and {profile.listings} listings")
        started = time.monotonic()
        asyncio.run(
            produce(
                bootstrap,
                catalogue.certificate_status.name,
                (
                    (c["cert_no"].encode(), CODEC.encode("CertificateStatusChanged", c))
                    for c in data.certificates()
                ),
            )
        )
        asyncio.run(
            produce(
                bootstrap,
                catalogue.listing_events.name,
                (
                    (e["listing_id"].encode(), CODEC.encode("ListingEvent", e))
                    for e in data.listings()
                ),
            )
        )
        log(f"pre-filled in {time.monotonic() - started:.1f}s")

        log("passthrough anchor")
        anchor = asyncio.run(
            passthrough(
                bootstrap, catalogue.listing_events.name, "bench.passthrough", profile.listings
            )
        )
        log(f"passthrough: {anchor:,.0f} events/s")
        floors = faust_floors(bootstrap, workdir, profile.floor_records)
        log("Faust floors: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in floors.items()))

        log("verification throughput: starting one worker")
        worker = BenchWorker(env, workdir / "worker.log").launch()
        worker.wait_ready(_READY_TIMEOUT_S)
        ready_at = time.monotonic()
        done_at = worker.wait_for(
            "ccc_guard_verdict_latency_seconds_count",
            profile.listings,
            timeout=7200,
            trigger="LISTING_EVENT",
        )
        throughput = profile.listings / (done_at - ready_at)
        log(f"throughput: {throughput:,.0f} listing events/s")

        latency = []
        offered = sorted({*LATENCY_RATES, round(0.7 * throughput)})
        for stage, rate in enumerate(offered):
            if rate > throughput:
                log(f"latency at {rate}/s: over the measured capacity, not measured")
                latency.append(LatencyPoint(rate, None, None, None, over_capacity=True))
                continue
            worker.wait_idle()
            log(f"latency at {rate}/s for {profile.latency_seconds}s")
            seconds = asyncio.run(
                latency_stage(
                    bootstrap, catalogue, data, rate, profile.latency_seconds, stage * 10_000_000
                )
            )
            latency.append(LatencyPoint.of(rate, seconds))

        log("revocation fan-out of the hottest certificate")
        takedowns_before = worker.sample("ccc_guard_verdicts_total", action="TAKEDOWN")
        revoked = next(iter(data.certificates()))
        revoked.update(status="REVOKED", version=2, changed_at=wall_clock_ms())
        sent_at = time.monotonic()
        asyncio.run(
            produce(
                bootstrap,
                catalogue.certificate_status.name,
                [(revoked["cert_no"].encode(), CODEC.encode("CertificateStatusChanged", revoked))],
            )
        )
        fanned_at = worker.wait_for(
            "ccc_guard_verdicts_total",
            takedowns_before + profile.hot_claims,
            600,
            action="TAKEDOWN",
        )
        fanout_s = fanned_at - sent_at
        log(f"fan-out of {profile.hot_claims}: {fanout_s:.2f}s")
        worker.stop()
        peak_rss = worker.peak_rss_mb

        log("recovery with RocksDB")
        restarted = BenchWorker(env, workdir / "worker-restart.log").launch()
        ready_rocksdb = restarted.wait_ready(_READY_TIMEOUT_S)
        restarted.stop()
        log("recovery with memory://")
        memory_env = {**env, "CCC_STORE": "memory://", "CCC_DATA_DIR": str(workdir / "memory-data")}
        in_memory = BenchWorker(memory_env, workdir / "worker-memory.log").launch()
        ready_memory = in_memory.wait_ready(_READY_TIMEOUT_S)
        in_memory.stop()

    results["results"] = {
        "passthrough_events_per_s": round(anchor),
        "throughput_events_per_s": round(throughput),
        "throughput_ratio": round(throughput / anchor, 3),
        "faust_floor_ratios": {name: round(rate / anchor, 3) for name, rate in floors.items()},
        "faust_floor_events_per_s": {name: round(rate) for name, rate in floors.items()},
        "latency": [dataclasses.asdict(point) for point in latency],
        "fanout_listings": profile.hot_claims,
        "fanout_seconds": round(fanout_s, 2),
        "ready_rocksdb_seconds": round(ready_rocksdb, 2),
        "ready_memory_seconds": round(ready_memory, 2),
        "peak_rss_mb": round(peak_rss),
        "listings": profile.listings,
    }
    return results


def _latency_at(r: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((p for p in r["latency"] if p["offered_per_s"] == rate), None)


def _p99_within(r: dict[str, Any], rate: int, limit_ms: float) -> bool | None:
    point = _latency_at(r, rate)
    if point is None:
        return None
    return not point["over_capacity"] and point["p99_ms"] <= limit_ms


def _seventy_percent(r: dict[str, Any]) -> int:
    return round(0.7 * int(r["throughput_events_per_s"]))


# (name, result, goal, met?) - met is None where the profile is too small for the target.
TARGETS: tuple[tuple[str, str, Callable[[dict[str, Any]], bool | None]], ...] = (
    ("throughput_ratio", "≥ 0.12x passthrough", lambda r: r["throughput_ratio"] >= 0.12),
    ("throughput_moonshot", "≥ 0.25x passthrough", lambda r: r["throughput_ratio"] >= 0.25),
    ("latency_2000", "p99 ≤ 50 ms", lambda r: _p99_within(r, 2000, 50)),
    ("latency_70", "p99 ≤ 100 ms", lambda r: _p99_within(r, _seventy_percent(r), 100)),
    (
        "fanout_seconds",
        "≤ 5 s for 100,000",
        lambda r: r["fanout_seconds"] <= 5 if r["fanout_listings"] >= 100_000 else None,
    ),
    (
        "ready_rocksdb_seconds",
        "≤ 30 s over 1M listings",
        lambda r: r["ready_rocksdb_seconds"] <= 30 if r["listings"] >= 1_000_000 else None,
    ),
    (
        "peak_rss_mb",
        "≤ 1536 MB for 1M listings",
        lambda r: r["peak_rss_mb"] <= 1536 if r["listings"] >= 1_000_000 else None,
    ),
)


def table(results: dict[str, Any]) -> str:
    r = results["results"]
    seventy = _seventy_percent(r)
    rows = [
        ("passthrough anchor", f"{r['passthrough_events_per_s']:,} events/s", ""),
        *(
            (f"Faust floor: {name}", f"{r['faust_floor_ratios'][name]:.3f}x", "")
            for name in r["faust_floor_ratios"]
        ),
        ("verification throughput", f"{r['throughput_events_per_s']:,} events/s", ""),
        ("  ratio to passthrough", f"{r['throughput_ratio']:.3f}x", "throughput_ratio"),
        ("", "", "throughput_moonshot"),
    ]
    for point in r["latency"]:
        rate = point["offered_per_s"]
        value = (
            "over capacity"
            if point["over_capacity"]
            else f"{point['p50_ms']} / {point['p99_ms']} / {point['max_ms']} ms"
        )
        key = "latency_2000" if rate == 2000 else "latency_70" if rate == seventy else ""
        label = f"latency p50/p99/max at {rate}/s" + (" (70 %)" if rate == seventy else "")
        rows.append((label, value, key))
    rows += [
        (
            f"fan-out of {r['fanout_listings']:,} listings",
            f"{r['fanout_seconds']} s",
            "fanout_seconds",
        ),
        ("ready over state, RocksDB", f"{r['ready_rocksdb_seconds']} s", "ready_rocksdb_seconds"),
        ("ready over state, memory://", f"{r['ready_memory_seconds']} s", ""),
        ("peak worker RSS", f"{r['peak_rss_mb']} MB", "peak_rss_mb"),
    ]
    verdicts = {key: (goal, ok(r)) for key, goal, ok in TARGETS}
    lines = [
        f"ccc-guard benchmark, profile {results['profile']}, commit {results['commit']}, "
        f"{results['machine']['cores']} cores, {results['data']['listings']:,} listings, "
        f"{results['data']['certificates']:,} certificates",
        f"| {'measure':40} | {'result':26} | {'target':22} | met |",
        f"|{'-' * 42}|{'-' * 28}|{'-' * 24}|-----|",
    ]
    for name, value, key in rows:
        goal, ok = verdicts.get(key, ("", None))
        mark = ("n/a" if goal else "") if ok is None else ("yes" if ok else "NO")
        lines.append(f"| {name:40} | {value:26} | {goal:22} | {mark:3} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """p50/p99 against offered load, and the throughput bars: anchor, Faust floors, ccc-guard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results["results"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    measured = [p for p in r["latency"] if not p["over_capacity"]]
    rates = [p["offered_per_s"] for p in measured]
    left.plot(rates, [p["p50_ms"] for p in measured], "o-", label="p50")
    left.plot(rates, [p["p99_ms"] for p in measured], "s-", label="p99")
    left.axhline(50, color="grey", linestyle=":", label="target p99 at 2,000/s")
    for point in r["latency"]:
        if point["over_capacity"]:
            left.axvline(point["offered_per_s"], color="red", alpha=0.3)
    left.set(xlabel="offered load (events/s)", ylabel="latency (ms)", yscale="log")
    left.set_title("Latency: event time to verdict")
    left.legend()
    names = ["passthrough", *r["faust_floor_ratios"], "ccc-guard"]
    ratios = [1.0, *r["faust_floor_ratios"].values(), r["throughput_ratio"]]
    bars = right.bar(names, ratios, color=["grey", "tab:blue", "tab:blue", "tab:green"])
    right.bar_label(bars, fmt="%.3f")
    right.axhline(0.12, color="grey", linestyle=":")
    right.set(ylabel="ratio to the passthrough anchor")
    right.set_title(f"Throughput ({r['passthrough_events_per_s']:,} events/s = 1)")
    figure.suptitle(
        f"ccc-guard {results['commit']}, profile {results['profile']}, "
        f"{results['machine']['cores']} cores"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200,000 listings (100,000 on one certificate), 10 s per latency load: minutes",
    )
    parser.add_argument("--listings", type=int, help="override the profile's listing count")
    parser.add_argument(
        "--hot-claims",
        type=int,
        help="override how many listings claim the hottest certificate (the fan-out stage)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CCC_NAME=VALUE",
        help="a worker setting for this run (repeatable), e.g. CCC_PRODUCER_LINGER_MS=20",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.listings:
        profile = dataclasses.replace(
            profile,
            name=f"{profile.name}-{args.listings}",
            listings=args.listings,
            hot_claims=min(profile.hot_claims, args.listings // 10),
        )
    if args.hot_claims:
        if args.hot_claims > profile.listings:
            parser.error("--hot-claims cannot exceed the listing count")
        profile = dataclasses.replace(
            profile, name=f"{profile.name}-hot{args.hot_claims}", hot_claims=args.hot_claims
        )
    overrides = dict(item.split("=", 1) for item in args.env)
    results = run(profile, overrides)
    out = REPO / "bench" / f"results-{profile.name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(table(results))
    log(f"written {out} and {out.with_suffix('.png').name}")
