"""The worker launcher without a broker: a worker that cannot start fails the wait at once,
with its own words; the web address it is awaited on."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.worker_process import WorkerProcess, WorkerProcessError, inherited_env


def test_a_worker_that_exits_at_start_fails_the_ready_wait_with_its_log(tmp_path: Path) -> None:
    worker = WorkerProcess(inherited_env({"CCC_PARTITIONS": "many"}), tmp_path / "worker.log")
    with pytest.raises(WorkerProcessError, match=r"exited with 2 while awaited ready") as failed:
        worker.launch().wait_ready(timeout=60)
    assert "CCC_PARTITIONS" in str(failed.value)
    assert worker.wait_exit(timeout=5) == 2
    assert not worker.alive
    assert worker.log_tail().startswith("===== start ")


def test_each_launch_has_its_own_section_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("an earlier run\n")
    worker = WorkerProcess(inherited_env({"CCC_NO_SUCH_SETTING": "1"}), log)
    assert worker.launch().wait_exit(timeout=60) == 2
    assert "an earlier run" not in worker.output()
    assert "CCC_NO_SUCH_SETTING" in worker.output()
    assert log.read_text().startswith("an earlier run\n")


def test_the_ready_wait_needs_the_web_server(tmp_path: Path) -> None:
    worker = WorkerProcess({"CCC_WEB_ENABLED": "false"}, tmp_path / "worker.log")
    with pytest.raises(WorkerProcessError, match="CCC_WEB_ENABLED"):
        worker.wait_ready(timeout=1)


def test_the_web_address_is_loopback_for_a_wildcard_bind(tmp_path: Path) -> None:
    env = {"CCC_WEB_HOST": "0.0.0.0", "CCC_WEB_PORT": "6100"}
    assert WorkerProcess(env, tmp_path / "w.log").web_url == "http://127.0.0.1:6100"
    free = WorkerProcess({}, tmp_path / "w.log")
    assert free.web_url.startswith("http://127.0.0.1:") and free.env["CCC_WEB_PORT"].isdigit()


def test_a_worker_never_launched_cannot_be_stopped(tmp_path: Path) -> None:
    with pytest.raises(WorkerProcessError, match="never launched"):
        WorkerProcess({}, tmp_path / "w.log").stop()
