"""``ccc-guard demo``: a local broker, a worker, and a synthetic platform + authority feed, with
verdicts printed as they arrive and a summary when it stops. Development only: the worker never
imports this module.

The screen carries only the demo's own lines. Client libraries' logs (aiokafka's retries while
a fresh broker settles, Faust's, mode's) go to ``.ccc-guard-demo/demo.log``, the worker's to
``worker.log`` beside it. The feed starts only once every topic has partition leaders and the
worker answers ``/readyz``, so a new user's first screen is verdicts, not retry warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from streams.clock import wall_clock_ms
from streams.demo_feed import DemoFeed
from streams.demo_report import Tally, format_shop_alert, format_verdict
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from topics.admin import ensure_topics
from topics.catalogue import Catalogue, TopicSpec, build_catalogue
from topics.client import GuardProducer, read_records
from topics.codecs import AvroCodec
from topics.connection import KafkaConnection

DEMO_DIR: Final = ".ccc-guard-demo"
_READY_TIMEOUT_S: Final = 180.0
# After the feed stops, verdicts still on their way are waited for this long at most, and no
# longer than until none has arrived for a second.
_DRAIN_MAX_S: Final = 5.0
_DRAIN_QUIET_S: Final = 1.0
_T = TypeVar("_T")


def say(line: str) -> None:
    print(line, flush=True)


async def run_demo(settings: Settings, *, duration: float, rate: float, seed: int) -> None:
    # Kept after the run so the logs can be read; the broker is new each run, so the worker's
    # state from a previous run is stale and goes.
    workdir = Path(DEMO_DIR).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    _log_to_file(workdir / "demo.log")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Replaces the handlers of Faust's command runner, which would stop the loop before the
    # summary is printed.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with contextlib.ExitStack() as stack:
            settings = _broker(stack, settings)
            say(f"broker: {settings.bootstrap_servers}")
            connection = KafkaConnection.from_config(settings.connection_config())
            catalogue = build_catalogue(settings.topic_naming())
            # Returns once every partition of every topic has a leader.
            await ensure_topics(connection, catalogue.all())
            say(f"topics ready ({settings.partitions} partitions each); starting the worker...")
            worker = _worker(stack, settings, workdir)
            ready = await _unless_stopped(
                asyncio.to_thread(worker.wait_ready, _READY_TIMEOUT_S), stop
            )
            if ready is None:
                say("interrupted before the worker was ready")
                return
            say(f"worker ready in {ready:.1f} s; metrics: {worker.web_url}/metrics")
            say(f"feeding {rate:g} listing events a second; Ctrl-C stops")
            tally = Tally()
            seconds = await _run(connection, catalogue, tally, stop, duration, rate, seed)
            say(tally.summary(seconds))
            say(f"logs: {worker.log_path} and {workdir / 'demo.log'}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _log_to_file(path: Path) -> None:
    """Every log record of this process to ``path``, none to the screen."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def _broker(stack: contextlib.ExitStack, settings: Settings) -> Settings:
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        return settings
    from localkafka import LocalKafka

    say("starting a local Apache Kafka broker (the first run fetches it with mvn)...")
    broker = stack.enter_context(LocalKafka())
    return dataclasses.replace(settings, bootstrap_servers=broker.bootstrap_servers)


def _worker(stack: contextlib.ExitStack, settings: Settings, workdir: Path) -> WorkerProcess:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "CCC_DATA_DIR": str(workdir / "data"),
        "CCC_EXPIRY_SWEEP_INTERVAL_SECONDS": "10",
        "CCC_PROGRESS_INTERVAL_SECONDS": "10",
    }
    env.pop("CCC_WEB_PORT", None)  # a free one: a worker of the user's may hold the default
    # Its own session: a Ctrl-C is the demo's, which stops the worker once the summary is out.
    worker = WorkerProcess(env, workdir / "worker.log", own_session=True).launch()

    def stop_worker() -> None:
        say(f"demo stopped; worker exit code {worker.stop(timeout=30)}")

    stack.callback(stop_worker)
    say(f"worker pid {worker.pid}, log: {worker.log_path}")
    return worker


async def _run(
    connection: KafkaConnection,
    catalogue: Catalogue,
    tally: Tally,
    stop: asyncio.Event,
    duration: float,
    rate: float,
    seed: int,
) -> float:
    """Feed until ``duration`` seconds pass (0: forever) or ``stop`` is set, then wait for the
    last verdicts; the seconds fed."""
    codec = AvroCodec()
    since = wall_clock_ms()
    readers = [
        asyncio.ensure_future(
            _watch(connection, catalogue.verdicts, "decided_at", since, _show_verdict(tally))
        ),
        asyncio.ensure_future(
            _watch(connection, catalogue.deadletter, "failed_at", since, _show_dead_letter(tally))
        ),
        asyncio.ensure_future(
            _watch(connection, catalogue.shop_alerts, "decided_at", since, _show_shop_alert(tally))
        ),
    ]
    started = time.monotonic()
    try:
        async with GuardProducer(connection, catalogue, codec) as producer:
            feeding = asyncio.ensure_future(_feed(producer, DemoFeed(seed), tally, rate))
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait(
                [*readers, feeding, stopping],
                timeout=duration or None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            feeding.cancel()
            stopping.cancel()
            for finished in done - {stopping}:
                finished.result()  # a reader or the feed failed: say why
            await asyncio.gather(feeding, return_exceptions=True)
            await producer.flush()
        seconds = time.monotonic() - started
        await _drain(tally)
        return seconds
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _feed(producer: GuardProducer, feed: DemoFeed, tally: Tally, rate: float) -> None:
    for change in feed.initial_certificates():
        await producer.certificate_status(change)
        tally.initial_certificates += 1
    n = 0
    while True:
        n += 1
        await producer.listing_event(feed.listing_event(n))
        tally.listing_events += 1
        if n % 40 == 0:
            change = feed.status_change()
            cert, status, version = change["cert_no"], change["status"], change["version"]
            say(f"--- authority: {cert} is now {status} (v{version})")
            await producer.certificate_status(change)
            tally.status_changes += 1
        if n % 250 == 0:
            say("--- feeding one undecodable record: it goes to the dead-letter topic")
            await producer.raw(producer.catalogue.listing_events.name, b"L-garbage", b"not avro")
            tally.undecodable += 1
        await asyncio.sleep(1 / rate)


def _show_verdict(tally: Tally) -> Callable[[dict[str, Any]], None]:
    def show(verdict: dict[str, Any]) -> None:
        tally.verdict(verdict, wall_clock_ms())
        say(format_verdict(verdict))

    return show


def _show_dead_letter(tally: Tally) -> Callable[[dict[str, Any]], None]:
    def show(dead_letter: dict[str, Any]) -> None:
        tally.dead_letter(dead_letter)
        say(f"--- dead letter: {dead_letter['error'][:120]}")

    return show


def _show_shop_alert(tally: Tally) -> Callable[[dict[str, Any]], None]:
    def show(alert: dict[str, Any]) -> None:
        tally.shop_alert(alert)
        say(format_shop_alert(alert))

    return show


async def _watch(
    connection: KafkaConnection,
    topic: TopicSpec,
    stamp: str,
    since: int,
    show: Callable[[dict[str, Any]], None],
) -> None:
    """``show`` every record of ``topic`` whose ``stamp`` field is ``since`` or later."""
    async for record in read_records(connection, topic.name, AvroCodec(), topic.avro_record):
        # An existing broker (KAFKA_BOOTSTRAP_SERVERS) holds earlier runs' records too.
        if record[stamp] >= since:
            show(record)


async def _drain(tally: Tally) -> None:
    deadline = time.monotonic() + _DRAIN_MAX_S
    seen = -1
    while tally.verdicts != seen and time.monotonic() < deadline:
        seen = tally.verdicts
        await asyncio.sleep(_DRAIN_QUIET_S)


async def _unless_stopped(awaitable: Awaitable[_T], stop: asyncio.Event) -> _T | None:
    """What ``awaitable`` returns, or None if ``stop`` is set first (it is then cancelled)."""
    task = asyncio.ensure_future(awaitable)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None
