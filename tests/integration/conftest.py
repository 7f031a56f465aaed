"""Fixtures for tests against a real Kafka broker.

One broker serves the whole session: set ``KAFKA_BOOTSTRAP_SERVERS`` to use an existing one,
otherwise a ``LocalKafka`` node is started on first use and stopped at the end. Every test in
this directory is marked ``integration`` so ``-m "not integration"`` skips them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from localkafka import LocalKafka

_HERE = Path(__file__).parent.resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees every collected item of the session, not just this directory's.
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def _session_broker() -> Iterator[LocalKafka | None]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    with LocalKafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka(_session_broker: LocalKafka | None) -> str:
    """Bootstrap servers of the session's broker (external or local)."""
    if _session_broker is None:
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    return _session_broker.bootstrap_servers


@pytest.fixture
def kafka_broker(_session_broker: LocalKafka | None) -> Iterator[LocalKafka]:
    """The session's ``LocalKafka``, for tests that stop, kill or restart it.

    Skipped against an external broker, which tests cannot control. The broker is started
    again after the test if the test left it down, so later tests still find it serving.
    """
    if _session_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at an external broker; cannot restart it")
    yield _session_broker
    if not _session_broker.is_running:
        _session_broker.start()
