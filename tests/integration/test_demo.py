"""``ccc-guard demo`` as a new user first sees it: its own broker, a worker and a feed, a quiet
screen of verdicts, and a summary when it stops."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import REPO

_NOISE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def test_the_demo_shows_only_its_own_lines_and_a_summary(tmp_path: Path) -> None:
    # What a shell that ran `make demo` passes on: no ccc-guard settings, no broker address
    # (the demo starts its own), the jar cache where the session's broker found it.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CCC_") and key != "KAFKA_BOOTSTRAP_SERVERS"
    }
    if "CCC_KAFKA_CACHE" in os.environ:
        env["CCC_KAFKA_CACHE"] = os.environ["CCC_KAFKA_CACHE"]
    # PYTHONPATH: the demo and its worker run this checkout, whichever one is installed.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ccc-guard")), "demo", "--duration", "15"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    screen = done.stdout + done.stderr
    assert done.returncode == 0, screen
    noise = [line for line in screen.splitlines() if _NOISE.search(line)]
    assert noise == [], screen

    verdicts = re.search(r"^verdicts: +(\d+) \(ALLOW (\d+), BLOCK (\d+),", screen, re.MULTILINE)
    assert verdicts is not None, screen
    total, allowed, blocked = (int(group) for group in verdicts.groups())
    assert total > 0 and allowed > 0 and blocked > 0, screen
    for heading in ("sent:", "blocking:", "takedowns:", "dead letters:", "latency:"):
        assert re.search(rf"^{heading} ", screen, re.MULTILINE), screen
    assert re.search(r"^latency: +p50 \d+ ms, p99 \d+ ms", screen, re.MULTILINE), screen
    # The client libraries' noise went to the demo's log file instead.
    assert (tmp_path / ".ccc-guard-demo" / "demo.log").is_file()
    assert (tmp_path / ".ccc-guard-demo" / "worker.log").is_file()
