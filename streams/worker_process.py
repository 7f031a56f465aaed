"""A ``ccc-guard worker`` in a process of its own, as in production: for the tests, the demo
and the benchmarks. Development only: the worker never imports this module.

Readiness is the worker's own ``GET /readyz`` (200 once its partitions are assigned and every
table is recovered), not a line of Faust's log. A worker that exits while awaited fails the
wait at once with the end of its log; every wait has a deadline. ``launch`` alone starts a
worker expected to fail (bad credentials, a wrong topic layout) and ``wait_exit`` awaits that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Self

from localkafka.ports import free_port
from localkafka.process import die_with_parent_hook

_POLL_INTERVAL_S: Final = 0.1
_PROBE_TIMEOUT_S: Final = 2.0
_START_MARK: Final = b"===== start "


class WorkerProcessError(Exception):
    """A worker exited, or did not get where it was awaited in time."""


class WorkerProcess:
    """One worker process with ``env`` as its whole environment, logging to ``log_path``
    (appended to, one marked section per start).

    Without ``CCC_WEB_PORT`` in ``env`` the worker gets a free port. It can be started again
    after it stopped, on the same environment. With ``own_session`` a Ctrl-C at the terminal
    reaches only the caller, which then stops the worker when it is done with it.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        log_level: str = "info",
        cwd: Path | None = None,
        own_session: bool = False,
    ) -> None:
        self.env = dict(env)
        self.env.setdefault("CCC_WEB_PORT", str(free_port()))
        # The log tail quoted by a failed wait must be what the worker last said.
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path, self._log_level, self._cwd = log_path, log_level, cwd
        self._own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0
        self._log_offset = 0

    @property
    def web_url(self) -> str:
        host = self.env.get("CCC_WEB_HOST", "127.0.0.1")
        if host in {"0.0.0.0", "::", ""}:
            host = "127.0.0.1"
        return f"http://{host}:{self.env['CCC_WEB_PORT']}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    # -- starting --------------------------------------------------------------------------

    def launch(self) -> Self:
        """Start the process and return at once."""
        if self.alive:
            raise WorkerProcessError(f"worker pid {self.pid} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(_START_MARK + f"{time.strftime('%X')} =====\n".encode())
            log.flush()
            self._launched_at = time.monotonic()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "-l", self._log_level],
                cwd=self._cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self._own_session,
                preexec_fn=die_with_parent_hook(),
            )
        return self

    def start(self, timeout: float = 90.0) -> Self:
        """``launch`` and ``wait_ready``; a worker that does not get ready is stopped."""
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Seconds from launch until ``/readyz`` answered 200.

        Raises ``WorkerProcessError`` with the end of the log when the worker exits first or
        is not ready within ``timeout`` seconds of this call.
        """
        if self.env.get("CCC_WEB_ENABLED", "true").lower() in {"false", "0", "no", "off"}:
            raise WorkerProcessError("CCC_WEB_ENABLED is off: no /readyz to wait for")
        deadline = time.monotonic() + timeout
        while True:
            self._fail_if_exited("while awaited ready")
            if self._readyz() == 200:
                return time.monotonic() - self._launched_at
            if time.monotonic() > deadline:
                raise WorkerProcessError(
                    f"worker pid {self.pid} not ready (GET {self.web_url}/readyz not 200) "
                    f"after {timeout:g} s; end of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def wait_exit(self, timeout: float = 120.0) -> int:
        """The exit code, once the worker exits by itself within ``timeout`` seconds; otherwise
        it is killed and ``WorkerProcessError`` raised with the end of its log."""
        process = self._require_process()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WorkerProcessError(
                f"worker pid {process.pid} still running after {timeout:g} s; "
                f"end of {self.log_path}:\n{self.log_tail()}"
            ) from None

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, up to ``timeout`` seconds for a clean shutdown, then SIGKILL; the exit
        code. Idempotent."""
        process = self._require_process()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def kill(self) -> int:
        """SIGKILL at once (a crash); the exit code."""
        process = self._require_process()
        if process.poll() is None:
            process.kill()
            process.wait()
        return process.returncode

    # -- the log ---------------------------------------------------------------------------

    def output(self) -> str:
        """Everything the worker wrote since its last launch."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read()
        except FileNotFoundError:
            return ""
        return text.decode("utf-8", "replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    # -- internals -------------------------------------------------------------------------

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise WorkerProcessError("the worker was never launched")
        return self._process

    def _fail_if_exited(self, when: str) -> None:
        process = self._require_process()
        code = process.poll()
        if code is not None:
            raise WorkerProcessError(
                f"worker pid {process.pid} exited with {code} {when}; "
                f"end of {self.log_path}:\n{self.log_tail()}"
            )

    def _readyz(self) -> int | None:
        try:
            with urllib.request.urlopen(
                f"{self.web_url}/readyz", timeout=_PROBE_TIMEOUT_S
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None


def inherited_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ``CCC_*`` settings, plus ``overrides``: a worker
    configured by the caller alone, whatever the shell exported."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CCC_")}
    env.update(overrides)
    return env
