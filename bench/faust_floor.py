"""``python -m bench.faust_floor``: how fast can Faust go at all on this machine?

Measures, in one run on the same pre-filled topic of listing events, the bench's passthrough
anchor (aiokafka: consume, decode, encode, produce) and Faust agents that do no work of their
own: one only iterates the events (``iterate``); one takes batches and hands each record to the
producer without awaiting it (``batched_send``); one awaits ``topic.send`` per event
(``awaited_send``). No stream processor built on faust-streaming beats the first two, so their
ratios to the anchor bound what the verification path can reach. ``python -m bench`` runs the
first two in the same run as the verification throughput.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.run import log, passthrough, produce
from localkafka import LocalKafka
from topics.codecs import AvroCodec

RECORDS = 200_000
PARTITIONS = 4

# The agents run as a Faust worker of their own, as ccc-guard does; the rate goes to the log.
AGENT = r"""
import os, time
import faust

app = faust.App(
    os.environ["FLOOR_APP"], broker="kafka://" + os.environ["FLOOR_BOOTSTRAP"],
    store="memory://", web_enabled=False, consumer_auto_offset_reset="earliest",
    key_serializer="raw", value_serializer="raw",
)
source = app.topic("floor-in", key_type=bytes, value_type=bytes)
target = app.topic("floor-out", key_type=bytes, value_type=bytes)
expected, mode = int(os.environ["FLOOR_RECORDS"]), os.environ["FLOOR_MODE"]
seen = {"n": 0, "started": 0.0}

def count(n):
    if not seen["n"]:
        seen["started"] = time.monotonic()
    seen["n"] += n
    if seen["n"] >= expected:
        app.log.warning("FLOOR-RATE %.1f", seen["n"] / (time.monotonic() - seen["started"]))
        os._exit(0)

@app.agent(source)
async def floor(stream):
    if mode == "batched_send":
        async for events in stream.take_events(2000, within=0.05):
            for event in events:
                await app.producer.send(
                    "floor-out", event.key, event.value, None, None, None
                )
            count(len(events))
        return
    async for event in stream.events():
        if mode == "awaited_send":
            await target.send(key=event.key, value=event.value)
        count(1)

app.main()
"""


def listing_events(count: int) -> Iterator[tuple[bytes, bytes]]:
    codec = AvroCodec()
    for n in range(count):
        key = f"L-{n}".encode()
        record = {
            "event_id": f"E-{n}",
            "event_type": "CREATED",
            "platform": "jd",
            "listing_id": key.decode(),
            "shop_id": "S-1",
            "title": "65W USB-C charger",
            "category_code": "0907",
            "brand": "Acme",
            "model": "A-65",
            "cert_numbers": ["2017010907948411"],
            "occurred_at": 1_790_000_000_000,
        }
        yield key, codec.encode("ListingEvent", record)


async def prepare(bootstrap: str, records: int = RECORDS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1) for name in ("floor-in", "floor-out", "floor-anchor")]
        )
    finally:
        await admin.close()
    await produce(bootstrap, "floor-in", listing_events(records))


MODES = ("iterate", "batched_send", "awaited_send")


def faust_agent_rate(bootstrap: str, workdir: Path, mode: str, records: int = RECORDS) -> float:
    script = workdir / "floor_agent.py"
    script.write_text(AGENT)
    env = dict(
        os.environ,
        FLOOR_APP=f"floor-{mode}-{time.time_ns() % 10**8}",
        FLOOR_BOOTSTRAP=bootstrap,
        FLOOR_RECORDS=str(records),
        FLOOR_MODE=mode,
    )
    done = subprocess.run(
        [sys.executable, str(script), "worker", "-l", "warn"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    match = re.search(r"FLOOR-RATE ([0-9.]+)", done.stdout + done.stderr)
    if match is None:
        raise RuntimeError(f"the Faust agent gave no rate:\n{done.stderr[-2000:]}")
    return float(match[1])


def main() -> None:
    with LocalKafka() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap_servers
        log(f"pre-filling {RECORDS:,} listing events")
        asyncio.run(prepare(bootstrap))
        anchor = asyncio.run(passthrough(bootstrap, "floor-in", "floor-anchor", RECORDS))
        rates = {"passthrough anchor (aiokafka)": anchor}
        for mode in MODES:
            rates[f"Faust agent, {mode}"] = faust_agent_rate(bootstrap, Path(tmp), mode)
    print(f"| measure ({RECORDS:,} records, {os.cpu_count()} cores) | events/s | ratio to anchor |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / anchor:.2f} |")


if __name__ == "__main__":
    main()
