"""The broker's JVM as a process: launching it in its own process group, watching its log until
it says it started, stopping or killing it, and running Kafka's short-lived tools beside it.

Knows nothing of listeners or users: ``broker.py`` says what to run and how to probe it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

from .errors import LocalKafkaError
from .ports import can_connect

STARTED_LINE: Final = b"Kafka Server started"
_POLL_INTERVAL_S: Final = 0.1
_PROBE_TIMEOUT_S: Final = 10.0
LOG_TAIL_CHARS: Final = 5000
_READ_LIMIT_BYTES: Final = 4 * 1024 * 1024
_ERROR_CONTEXT_LINES: Final = 25


class PortTakenError(Exception):
    """The broker lost a race for one of its freshly picked ports."""


class BrokerProcess:
    """One run of the broker's JVM, writing stdout and stderr to ``stdout_file``."""

    def __init__(self, command: Sequence[str], *, cwd: Path, stdout_file: Path) -> None:
        self.stdout_file = stdout_file
        with stdout_file.open("ab") as out:
            try:
                self._proc = subprocess.Popen(
                    command,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Own process group: a Ctrl-C aimed at the test run must not reach the
                    # broker before stop() has shut it down in order.
                    start_new_session=True,
                    preexec_fn=die_with_parent_hook(),
                )
            except OSError as exc:
                raise LocalKafkaError(f"cannot run {command[0]}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, grace_s: float) -> None:
        """SIGTERM, up to ``grace_s`` for a clean shutdown, then SIGKILL."""
        if self.running:
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._proc.wait()

    def kill(self) -> None:
        if self.running:
            self._signal_group(signal.SIGKILL)
            self._proc.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        # The broker leads its own process group (start_new_session), so the group id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)


class StartupLogs:
    """What the broker's log and stdout gained since one start began: its readiness line, and
    the report of a failed start."""

    def __init__(self, server_log: Path, stdout_file: Path) -> None:
        # The log accumulates over restarts: only lines written after this point count as
        # this start's readiness line or failure.
        self.server_log, self.stdout_file = server_log, stdout_file
        self._log_offset = _file_size(server_log)
        self._out_offset = _file_size(stdout_file)
        self._watcher = _LogWatcher(server_log, self._log_offset, STARTED_LINE)

    def started(self) -> bool:
        return self._watcher.seen()

    def server_log_text(self) -> str:
        return _read_since(self.server_log, self._log_offset)

    def failure_report(self) -> str:
        log_text = self.server_log_text()
        parts = []
        first_error = _first_error(log_text)
        if first_error:
            # A failed start logs its cause once, then hundreds of shutdown lines: the tail
            # alone would hide why it failed.
            parts.append(f"--- first error in {self.server_log} ---\n{first_error}")
        if log_text:
            parts.append(f"--- end of {self.server_log} ---\n{log_text[-LOG_TAIL_CHARS:]}")
        out_text = _read_since(self.stdout_file, self._out_offset)
        if out_text:
            # JVM-level failures (bad Java version, missing classes) only appear here.
            parts.append(f"--- end of {self.stdout_file} ---\n{out_text[-LOG_TAIL_CHARS:]}")
        return "\n".join(parts) if parts else "(the broker wrote no log output)"


def wait_until_serving(
    process: BrokerProcess,
    logs: StartupLogs,
    *,
    started_at: float,
    timeout_s: float,
    port: int,
    probe: Callable[[float], None],
    ports: str,
    workdir: Path,
) -> None:
    """Block until the log says the server started, ``port`` accepts connections and ``probe``
    (a real request, given its timeout) succeeds. Raises ``PortTakenError`` when the broker
    exited because one of ``ports`` (their description) was taken, ``LocalKafkaError`` for any
    other exit or at the deadline."""
    deadline = started_at + timeout_s
    logged_started = tcp_open = False
    last_probe_error: BaseException | None = None
    while True:
        returncode = process.poll()
        if returncode is not None:
            report = logs.failure_report()
            if "Address already in use" in logs.server_log_text():
                raise PortTakenError(f"Kafka could not bind {ports}: already in use\n{report}")
            raise LocalKafkaError(
                f"Kafka broker exited with code {returncode} during startup "
                f"(workdir {workdir}):\n{report}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stage = (
                f"the metadata probe never succeeded (last error: {last_probe_error!r})"
                if tcp_open
                else "its client port never accepted connections"
                if logged_started
                else f"{STARTED_LINE.decode()!r} never appeared in {logs.server_log}"
            )
            raise LocalKafkaError(
                f"Kafka broker not ready after {timeout_s:g} s: {stage}:\n{logs.failure_report()}"
            )
        if not logged_started:
            logged_started = logs.started()
        elif not tcp_open:
            tcp_open = can_connect(port)
        else:
            try:
                probe(min(remaining, _PROBE_TIMEOUT_S))
                return
            except Exception as exc:
                last_probe_error = exc
        time.sleep(_POLL_INTERVAL_S)


def run_tool(command: Sequence[str], *, cwd: Path, timeout_s: float, what: str) -> str:
    """Run a short-lived tool (Kafka's, openssl) to its end; its output (stdout, then stderr).

    Raises ``LocalKafkaError`` naming ``what`` when it cannot run, overruns or fails.
    """
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"{what} took over {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise LocalKafkaError(f"cannot run {command[0]}: {exc}") from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise LocalKafkaError(
            f"{what} failed (exit {done.returncode}):\n{output[-LOG_TAIL_CHARS:]}"
        )
    return output


class Closeable(Protocol):
    def close(self) -> None: ...


# Instances started and not yet closed. Closed at interpreter exit so a run that forgets one (or
# dies on an exception) leaves neither a JVM holding 768 MB nor a temp dir behind. Strong
# references on purpose: a dropped instance must still be found here to stop its broker.
_unclosed: set[Closeable] = set()


def close_at_exit(instance: Closeable) -> None:
    _unclosed.add(instance)


def closed(instance: Closeable) -> None:
    _unclosed.discard(instance)


@atexit.register
def _close_unclosed() -> None:
    for instance in list(_unclosed):
        with contextlib.suppress(Exception):
            instance.close()


def die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the child (the broker, a worker) if this process
    dies uncleanly.

    atexit does not run when the test process is SIGKILLed or os._exit()s (pytest-timeout's
    thread method does), which would orphan the child. PDEATHSIG fires when the *thread* that
    forked exits, so it is only armed for the main thread, which lives as long as the process.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        # The parent may already have died between fork and prctl; then nobody would stop us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


class _LogWatcher:
    """Incrementally scans a growing log file for one marker line."""

    def __init__(self, path: Path, offset: int, needle: bytes) -> None:
        self._path = path
        self._offset = offset
        self._needle = needle
        # Bytes carried over so a marker split across two reads is still found.
        self._carry = b""

    def seen(self) -> bool:
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return False
        self._offset += len(chunk)
        window = self._carry + chunk
        if self._needle in window:
            return True
        self._carry = window[-len(self._needle) :]
        return False


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_since(path: Path, offset: int) -> str:
    """What ``path`` gained after ``offset`` (at most the last few MB), stripped."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - _READ_LIMIT_BYTES))
            return handle.read().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return ""


def _first_error(log_text: str) -> str:
    """The first ERROR or FATAL record with its stack trace (trimmed), or ''."""
    lines = log_text.splitlines()
    for index, line in enumerate(lines):
        if "] ERROR " in line or "] FATAL " in line:
            record = [line]
            for follow in lines[index + 1 : index + 1 + _ERROR_CONTEXT_LINES]:
                if follow.startswith("["):
                    break
                record.append(follow)
            return "\n".join(record)
    return ""
