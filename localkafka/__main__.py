"""Run a local Kafka broker in the foreground: ``python -m localkafka``.

The only line on stdout is ``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>``, printed once the
broker serves clients, so scripts can ``eval`` or grep it; everything else goes to stderr.
``--fetch-only`` just fills the jar cache and prints the classpath directory.
The broker runs until SIGINT or SIGTERM, then shuts down cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .broker import LocalKafka
from .errors import LocalKafkaError
from .jars import DEFAULT_KAFKA_VERSION, ensure_broker_jars

# How often the foreground loop checks that the broker is still alive while waiting for a signal.
_WATCH_INTERVAL_S = 1.0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m localkafka",
        description="Run a single-node Kafka broker on a free loopback port until interrupted.",
    )
    parser.add_argument(
        "--kafka-version",
        default=DEFAULT_KAFKA_VERSION,
        help="Apache Kafka version to run (default %(default)s)",
    )
    parser.add_argument(
        "--fetch-only",
        action="store_true",
        help="only download the broker's jars into the cache, print their directory, exit",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="directory for config, data and logs (kept; default: a temp dir removed at exit)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the broker to serve clients (default %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        if args.fetch_only:
            # The bare directory on stdout, for `java -cp "$(python -m localkafka --fetch-only)/*"`.
            print(ensure_broker_jars(args.kafka_version), flush=True)
            return 0
        return _serve(args)
    except LocalKafkaError as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only flag here: stopping the broker waits on a child process, which must not run
        # inside a signal handler that may have interrupted start().
        stop_requested.set()

    # Installed before starting so a Ctrl-C during the (multi-second) start still ends in
    # stop() rather than a KeyboardInterrupt racing the startup wait.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    broker = LocalKafka(
        version=args.kafka_version,
        workdir=args.workdir,
        startup_timeout=args.startup_timeout,
    )
    with broker:
        if stop_requested.is_set():
            return 0
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        print(
            f"localkafka: Kafka {broker.version} ready in {broker.startup_seconds or 0:.1f} s; "
            f"workdir {broker.workdir}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop_requested.wait(_WATCH_INTERVAL_S):
            if not broker.is_running:
                # Quote the log here: leaving the with block deletes a temp workdir.
                print(
                    f"localkafka: the broker exited unexpectedly; end of {broker.server_log}:\n"
                    f"{_log_tail(broker.server_log)}",
                    file=sys.stderr,
                )
                return 1
        print("localkafka: stopping", file=sys.stderr, flush=True)
    return 0


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
