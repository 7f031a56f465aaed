"""Whether the broker really serves clients: one metadata round trip over a listener."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from .errors import LocalKafkaError


def probe_metadata(
    bootstrap_servers: str, timeout: float, auth: Mapping[str, Any] | None = None
) -> None:
    """One real metadata round trip, on a private event loop in a helper thread; raises what
    the client raised, or ``LocalKafkaError`` when the answer lists no broker yet.

    A helper thread because start() may be called from code already running an asyncio loop
    in this thread, where asyncio.run() is refused.
    """

    async def probe() -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="localkafka-probe",
            request_timeout_ms=int(timeout * 1000),
            **(auth or {}),
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        if not cluster.get("brokers"):
            raise LocalKafkaError("metadata response lists no brokers yet")

    async def bounded() -> None:
        await asyncio.wait_for(probe(), timeout)

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="localkafka-probe"
    ) as pool:
        pool.submit(asyncio.run, bounded()).result()
