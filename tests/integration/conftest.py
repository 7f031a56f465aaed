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
from tests.integration.harness import MODEL_BLOCK_PLATFORM, Deployment, Guard, running_guard

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


@pytest.fixture(scope="module")
def guard(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    """One worker on its own topics, shared by a module's tests; tests keep apart by using
    fresh listing ids and certificate numbers."""
    # One platform that blocks on a model mismatch, the others on the default (WARN).
    model_block = {"CCC_MODEL_MISMATCH_BY_PLATFORM": f"{MODEL_BLOCK_PLATFORM}=BLOCK"}
    deployment = Deployment(kafka, tmp_path_factory.mktemp("guard"), extra_env=model_block)
    with running_guard(deployment) as running:
        yield running
