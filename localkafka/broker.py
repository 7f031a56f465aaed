"""A real single-node Kafka broker (combined KRaft broker + controller) for development and tests.

The broker is the genuine JVM broker from Maven Central (see ``jars.py``), not a fake: tests
exercise the same protocol, group coordinator and log semantics as production. One node listens
on two free loopback ports picked per instance, so parallel runs never collide, and it keeps those
ports and its data across ``stop()``/``start()`` so tests can restart it under a running worker.

Secured mode (``scram_users=...``) adds a third listener, SASL_SSL with SCRAM-SHA-512, where ACLs
are enforced (Kafka's ``StandardAuthorizer``): the users are created when the node is formatted,
with an ``admin`` super user beside them, and the TLS certificate comes from a throwaway CA whose
certificate is ``ca_file``. The PLAINTEXT and controller listeners stay on loopback for the node's
own use (KRaft's controller channel cannot use SCRAM); their principal, ``User:ANONYMOUS``, has to
be a super user for the node to register with its own controller, so anything on this machine that
connects to ``bootstrap_servers`` bypasses the ACLs. Test secured clients on
``sasl_bootstrap_servers`` only.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from .errors import LocalKafkaError
from .jars import DEFAULT_KAFKA_VERSION, ensure_broker_jars, find_java
from .tls import ensure_server_tls, write_private

_LOG4J_CONFIG: Final = Path(__file__).with_name("log4j2.properties")
_STARTED_LINE: Final = b"Kafka Server started"
_NODE_ID: Final = 1
_HOST: Final = "127.0.0.1"

# Secured mode.
SCRAM_MECHANISM: Final = "SCRAM-SHA-512"
ADMIN_USER: Final = "admin"
_SCRAM_LOGIN_MODULE: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
_AUTHORIZER: Final = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_ACL_COMMAND: Final = "org.apache.kafka.tools.AclCommand"
_ACL_TIMEOUT_S: Final = 120.0
# Kept to what StorageTool's --add-scram syntax ([name=...,password=...]) and a JAAS line carry
# without quoting rules.
_SCRAM_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SCRAM_PASSWORD: Final = re.compile(r"[A-Za-z0-9._~+-]{8,128}")

_STOP_GRACE_S: Final = 15.0
_FORMAT_TIMEOUT_S: Final = 120.0
_POLL_INTERVAL_S: Final = 0.1
_PROBE_TIMEOUT_S: Final = 10.0
_LOG_TAIL_CHARS: Final = 5000
_READ_LIMIT_BYTES: Final = 4 * 1024 * 1024
_ERROR_CONTEXT_LINES: Final = 25
# Ports are picked by binding to port 0 and closing the socket, so another process can take one
# before the broker binds it; a fresh node simply gets new ports and tries again.
_BIND_ATTEMPTS: Final = 3

# Settings the instance owns: overriding them through extra_config would desynchronise the
# ports, node id or data directory that start()/stop()/bootstrap_servers rely on.
_RESERVED_KEYS: Final = frozenset(
    {
        "process.roles",
        "node.id",
        "controller.quorum.voters",
        "controller.quorum.bootstrap.servers",
        "listeners",
        "advertised.listeners",
        "controller.listener.names",
        "inter.broker.listener.name",
        "listener.security.protocol.map",
        "log.dirs",
        "log.dir",
        "metadata.log.dir",
    }
)

# Settings a secured node owns (besides every ``listener.*`` one).
_SECURED_KEYS: Final = frozenset(
    {"authorizer.class.name", "super.users", "allow.everyone.if.no.acl.found"}
)

_JVM_BROKER_OPTS: Final = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    # An out-of-memory broker that keeps running only shows up as a test timeout much later.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# Tools (StorageTool, AclCommand) run for a second or two: the client compiler alone and the
# serial collector halve their start-up (kafka-acls: ~3.4 s -> ~1.5 s on two busy cores).
_JVM_TOOL_OPTS: Final = (
    "-Xmx256m",
    "-Djava.awt.headless=true",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
)


class LocalKafka:
    """One local Kafka node, usable as a context manager.

    ``start()`` fetches the jars if needed, formats a new node the first time and waits until
    the broker answers metadata requests; ``stop()`` shuts it down gracefully but keeps its ports
    and data, so a later ``start()`` brings back the same node. ``close()`` (and leaving the
    ``with`` block) stops it and removes the working directory if this instance created it and
    ``keep`` is false.
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        workdir: Path | None = None,
        startup_timeout: float = 90.0,
        extra_config: Mapping[str, str] | None = None,
        keep: bool = False,
        scram_users: Mapping[str, str] | None = None,
    ) -> None:
        if startup_timeout <= 0:
            raise LocalKafkaError(f"startup_timeout must be positive, got {startup_timeout}")
        extra = dict(extra_config or {})
        reserved = sorted(
            key
            for key in extra
            if key in _RESERVED_KEYS
            or (scram_users is not None and (key in _SECURED_KEYS or key.startswith("listener.")))
        )
        if reserved:
            raise LocalKafkaError(f"extra_config may not set {', '.join(reserved)}")
        for key, value in extra.items():
            _check_property(key, value)
        users = dict(scram_users) if scram_users is not None else None
        for name, password in (users or {}).items():
            if name == ADMIN_USER or not _SCRAM_NAME.fullmatch(name):
                raise LocalKafkaError(
                    f"SCRAM user name {name!r}: 1-64 of [A-Za-z0-9._-], and not {ADMIN_USER!r}"
                )
            if not _SCRAM_PASSWORD.fullmatch(password):
                # The password itself is not quoted: this message can end up in a test log.
                raise LocalKafkaError(
                    f"the password of SCRAM user {name!r} must be 8-128 of [A-Za-z0-9._~+-]"
                )

        self._version = version
        self._requested_workdir = workdir
        self._startup_timeout = startup_timeout
        self._extra_config = extra
        self._keep = keep
        self._scram_users = users

        self._workdir: Path | None = None
        self._owns_workdir = False
        # (PLAINTEXT, CONTROLLER) or, secured, (PLAINTEXT, CONTROLLER, SASL_SSL).
        self._ports: tuple[int, ...] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._startup_seconds: float | None = None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            # __exit__ does not run when __enter__ raises; without this a failed start would
            # leave its temp dir (and possibly a half-started JVM) behind.
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        where = f" {self.bootstrap_servers}" if self._ports else ""
        return f"<LocalKafka {self._version}{where} {state}>"

    # -- public state ----------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._version

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``; stable across stop()/start() of this instance."""
        return f"{_HOST}:{self.port}"

    @property
    def port(self) -> int:
        """The client (PLAINTEXT) port."""
        return self._require_ports()[0]

    @property
    def controller_port(self) -> int:
        return self._require_ports()[1]

    # -- secured mode ----------------------------------------------------------------------

    @property
    def secured(self) -> bool:
        """Whether the node has the SASL_SSL listener (``scram_users`` was given)."""
        return self._scram_users is not None

    @property
    def sasl_ssl_port(self) -> int:
        """The SASL_SSL (SCRAM-SHA-512, ACLs enforced) client port of a secured node."""
        self._require_secured()
        return self._require_ports()[2]

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the SASL_SSL listener; stable across stop()/start()."""
        return f"{_HOST}:{self.sasl_ssl_port}"

    @property
    def ca_file(self) -> Path:
        """PEM certificate of the throwaway CA that signed the SASL_SSL listener's certificate
        (for ``localhost`` and ``127.0.0.1``): what clients trust."""
        self._require_secured()
        return self.workdir / "tls" / "ca.pem"

    @property
    def admin_password(self) -> str:
        """Password of the ``admin`` super user (random, made when the node is formatted)."""
        self._require_secured()
        path = self._admin_password_file
        if not path.is_file():
            raise LocalKafkaError("the node has no admin user yet: call start() first")
        return path.read_text(encoding="ascii").strip()

    @property
    def admin_client_properties(self) -> Path:
        """A Java client properties file (``--command-config`` of Kafka's CLI tools) that
        connects to the SASL_SSL listener as ``admin``."""
        self._require_secured()
        return self.workdir / "admin-client.properties"

    def acl_command(self, args: Sequence[str]) -> str:
        """Run Kafka's ``kafka-acls`` (``AclCommand``) as ``admin`` over SASL_SSL with ``args``
        (``--add --allow-principal User:alice --operation Read --topic t`` ...); returns its
        output. The node must be running."""
        self._require_secured()
        if not self.is_running:
            raise LocalKafkaError("the broker is not running")
        command = [
            find_java(),
            *_JVM_TOOL_OPTS,
            *self._jvm_logging_opts(),
            "-cp",
            str(ensure_broker_jars(self._version) / "*"),
            _ACL_COMMAND,
            "--bootstrap-server",
            self.sasl_bootstrap_servers,
            "--command-config",
            str(self.admin_client_properties),
            *args,
        ]
        try:
            done = subprocess.run(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_ACL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"kafka-acls took over {_ACL_TIMEOUT_S:.0f} s") from exc
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or "Error while executing" in output:
            raise LocalKafkaError(
                f"kafka-acls {' '.join(args)} failed (exit {done.returncode}):\n"
                f"{output[-_LOG_TAIL_CHARS:]}"
            )
        return output

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LocalKafkaError("the broker has no working directory yet: call start() first")
        return self._workdir

    @property
    def server_log(self) -> Path:
        """The broker's log4j log; it accumulates across restarts of the node."""
        return self.workdir / "logs" / "server.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc is not None else None

    @property
    def startup_seconds(self) -> float | None:
        """Wall time of the last successful start() (JVM launch to first metadata answer)."""
        return self._startup_seconds

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the node (formatting it first if new) and block until it serves clients.

        A no-op if already running. Safe to call while an asyncio loop runs in this thread
        (the readiness probe uses its own loop on a helper thread), though it blocks that loop.
        """
        if self.is_running:
            return self
        self._reap()
        _unclosed.add(self)
        lib = ensure_broker_jars(self._version)
        java = find_java()
        workdir = self._ensure_workdir()
        for directory in (self._data_dir, self._log_dir):
            directory.mkdir(parents=True, exist_ok=True)

        fresh_ports = self._ports is None
        if self._ports is None:
            self._ports = _pick_free_ports(self._port_count)
        formatted = (self._data_dir / "meta.properties").is_file()
        if self.secured:
            ensure_server_tls(workdir / "tls")
            if not formatted:
                write_private(self._admin_password_file, secrets.token_urlsafe(24) + "\n")
        self._write_config()
        if not formatted:
            self._format(java, lib)

        attempts = _BIND_ATTEMPTS if fresh_ports else 1
        for attempt in range(1, attempts + 1):
            try:
                self._launch_and_wait(java, lib, workdir)
                return self
            except _PortTakenError as exc:
                if attempt == attempts:
                    raise LocalKafkaError(str(exc)) from None
                # With static voters the ports are not part of the formatted data, so the same
                # node can simply move to new ones.
                self._ports = _pick_free_ports(self._port_count)
                self._write_config()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, up to 15 s for a clean shutdown, then SIGKILL. Keeps ports and data.

        Idempotent.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the broker at once (a crash, for fault tests). Keeps ports and data."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self._proc = None

    def close(self) -> None:
        """Stop the broker and delete its working directory if this instance created it.

        After close() a start() begins again with a brand-new node on new ports.
        """
        self.stop()
        _unclosed.discard(self)
        if self._workdir is not None and self._owns_workdir and not self._keep:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False
            self._ports = None

    # -- internals -------------------------------------------------------------------------

    @property
    def _data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def _log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def _config_file(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def _stdout_file(self) -> Path:
        return self.workdir / "broker.out"

    def _require_ports(self) -> tuple[int, ...]:
        if self._ports is None:
            raise LocalKafkaError("the broker has no ports yet: call start() first")
        return self._ports

    @property
    def _port_count(self) -> int:
        return 3 if self.secured else 2

    def _require_secured(self) -> None:
        if not self.secured:
            raise LocalKafkaError("this node has no SASL_SSL listener: pass scram_users=...")

    @property
    def _admin_password_file(self) -> Path:
        return self.workdir / "admin.password"

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            if self._requested_workdir is not None:
                self._workdir = self._requested_workdir.resolve()
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="localkafka-"))
                self._owns_workdir = True
        return self._workdir

    def _reap(self) -> None:
        # A broker that died on its own still holds a Popen; forget it so start() relaunches.
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _config(self) -> dict[str, str]:
        port, controller_port = self._require_ports()[:2]
        config = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{_HOST}:{controller_port}",
            "listeners": f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self._data_dir),
            # A missing topic must be an error the worker reports, not a topic silently
            # created with broker defaults (wrong partition count breaks co-partitioning).
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # The default 50 partitions make the first consumer-group join take seconds.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # The default 3 s delay only helps real multi-member groups and slows every test.
            "group.initial.rebalance.delay.ms": "0",
            # The default reserves 128 MB of heap up front for the log cleaner.
            "log.cleaner.dedupe.buffer.size": "16777216",
            # After kill() the restarted node is refused (DUPLICATE_BROKER_REGISTRATION) until
            # its previous incarnation's session expires: ~10 s with the 9 s default, ~4 s here.
            # Both ends are in one JVM on loopback, so a shorter session cannot flap in practice.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "750",
        }
        if self.secured:
            config.update(self._secured_config())
        config.update(self._extra_config)
        return config

    def _secured_config(self) -> dict[str, str]:
        port, controller_port, sasl_port = self._require_ports()
        tls = self.workdir / "tls"
        listener = "listener.name.sasl_ssl"
        return {
            "listeners": (
                f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{controller_port},"
                f"SASL_SSL://{_HOST}:{sasl_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{port},SASL_SSL://{_HOST}:{sasl_port}",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"
            ),
            f"{listener}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"{listener}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                f"{_SCRAM_LOGIN_MODULE} required;"
            ),
            f"{listener}.ssl.keystore.type": "PEM",
            f"{listener}.ssl.keystore.location": str(tls / "server-keystore.pem"),
            f"{listener}.ssl.client.auth": "none",
            "authorizer.class.name": _AUTHORIZER,
            # ANONYMOUS is the principal of the node's own PLAINTEXT and controller listeners:
            # without it the broker cannot even register with its controller.
            "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _write_config(self) -> None:
        lines = [f"{key}={_escape_property(value)}" for key, value in self._config().items()]
        tmp = self._config_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(self._config_file)
        if self.secured:
            self._write_admin_client_properties()

    def _write_admin_client_properties(self) -> None:
        password = self.admin_password
        jaas = f'{_SCRAM_LOGIN_MODULE} required username="{ADMIN_USER}" password="{password}";'
        lines = [
            "security.protocol=SASL_SSL",
            f"sasl.mechanism={SCRAM_MECHANISM}",
            f"sasl.jaas.config={_escape_property(jaas)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={_escape_property(str(self.ca_file))}",
        ]
        write_private(self.admin_client_properties, "\n".join(lines) + "\n")

    def _admin_auth(self) -> dict[str, Any]:
        """aiokafka keyword arguments that connect to the SASL_SSL listener as admin."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": ADMIN_USER,
            "sasl_plain_password": self.admin_password,
            "ssl_context": create_ssl_context(cafile=str(self.ca_file)),
        }

    def _scram_format_args(self) -> list[str]:
        users = {ADMIN_USER: self.admin_password, **(self._scram_users or {})}
        return [
            arg
            for name, password in users.items()
            for arg in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")
        ]

    def _jvm_logging_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={_LOG4J_CONFIG.resolve().as_uri()}",
            f"-Dkafka.logs.dir={self._log_dir}",
        ]

    def _format(self, java: str, lib: Path) -> None:
        command = [
            java,
            *_JVM_TOOL_OPTS,
            *self._jvm_logging_opts(),
            "-cp",
            str(lib / "*"),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _new_cluster_id(),
            "-c",
            str(self._config_file),
            # No --standalone: the static controller.quorum.voters already names the only voter,
            # and StorageTool refuses the two together.
            *(self._scram_format_args() if self.secured else []),
        ]
        try:
            done = subprocess.run(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(
                f"formatting the Kafka storage in {self._data_dir} took over "
                f"{_FORMAT_TIMEOUT_S:.0f} s"
            ) from exc
        except OSError as exc:
            raise LocalKafkaError(f"cannot run {java}: {exc}") from exc
        if done.returncode != 0:
            output = done.stdout.decode("utf-8", "replace").strip()[-_LOG_TAIL_CHARS:]
            raise LocalKafkaError(
                f"formatting the Kafka storage in {self._data_dir} failed "
                f"(exit {done.returncode}):\n{output}"
            )

    def _launch_and_wait(self, java: str, lib: Path, workdir: Path) -> None:
        command = [
            java,
            *_JVM_BROKER_OPTS,
            *self._jvm_logging_opts(),
            "-cp",
            str(lib / "*"),
            "kafka.Kafka",
            str(self._config_file),
        ]
        # The log accumulates over restarts: only lines written after this point count as
        # this start's readiness line or failure.
        log_offset = _file_size(self.server_log)
        out_offset = _file_size(self._stdout_file)
        started_at = time.monotonic()
        with self._stdout_file.open("ab") as out:
            try:
                self._proc = subprocess.Popen(
                    command,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Own process group: a Ctrl-C aimed at the test run must not reach the
                    # broker before stop() has shut it down in order.
                    start_new_session=True,
                    preexec_fn=_die_with_parent_hook(),
                )
            except OSError as exc:
                raise LocalKafkaError(f"cannot run {java}: {exc}") from exc
        try:
            self._wait_ready(started_at, log_offset, out_offset)
        except BaseException:
            self.stop()
            raise
        self._startup_seconds = time.monotonic() - started_at

    def _wait_ready(self, started_at: float, log_offset: int, out_offset: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = started_at + self._startup_timeout
        watcher = _LogWatcher(self.server_log, log_offset, _STARTED_LINE)
        logged_started = tcp_open = False
        last_probe_error: BaseException | None = None
        while True:
            returncode = proc.poll()
            if returncode is not None:
                self._proc = None
                log_text = _read_since(self.server_log, log_offset)
                report = self._failure_report(log_text, out_offset)
                if "Address already in use" in log_text:
                    raise _PortTakenError(
                        f"Kafka could not bind {self.bootstrap_servers} or controller port "
                        f"{self.controller_port}: already in use\n{report}"
                    )
                raise LocalKafkaError(
                    f"Kafka broker exited with code {returncode} during startup "
                    f"(workdir {self.workdir}):\n{report}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stage = (
                    f"the metadata probe never succeeded (last error: {last_probe_error!r})"
                    if tcp_open
                    else "its client port never accepted connections"
                    if logged_started
                    else f"{_STARTED_LINE.decode()!r} never appeared in {self.server_log}"
                )
                report = self._failure_report(_read_since(self.server_log, log_offset), out_offset)
                raise LocalKafkaError(
                    f"Kafka broker not ready after {self._startup_timeout:g} s: {stage}:\n{report}"
                )
            if not logged_started:
                logged_started = watcher.seen()
            elif not tcp_open:
                tcp_open = _can_connect(self.port)
            else:
                try:
                    timeout = min(remaining, _PROBE_TIMEOUT_S)
                    _probe_metadata(self.bootstrap_servers, timeout)
                    if self.secured:
                        # Proves the TLS keystore and the admin's SCRAM credentials work.
                        _probe_metadata(self.sasl_bootstrap_servers, timeout, self._admin_auth())
                    return
                except Exception as exc:
                    last_probe_error = exc
            time.sleep(_POLL_INTERVAL_S)

    def _failure_report(self, log_text: str, out_offset: int) -> str:
        parts = []
        first_error = _first_error(log_text)
        if first_error:
            # A failed start logs its cause once, then hundreds of shutdown lines: the tail
            # alone would hide why it failed.
            parts.append(f"--- first error in {self.server_log} ---\n{first_error}")
        if log_text:
            parts.append(f"--- end of {self.server_log} ---\n{log_text[-_LOG_TAIL_CHARS:]}")
        out_text = _read_since(self._stdout_file, out_offset)
        if out_text:
            # JVM-level failures (bad Java version, missing classes) only appear here.
            parts.append(f"--- end of {self._stdout_file} ---\n{out_text[-_LOG_TAIL_CHARS:]}")
        return "\n".join(parts) if parts else "(the broker wrote no log output)"


class _PortTakenError(Exception):
    """The broker lost a race for one of its freshly picked ports."""


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


# Instances started and not yet closed. Closed at interpreter exit so a run that forgets one (or
# dies on an exception) leaves neither a JVM holding 768 MB nor a temp dir behind. Strong
# references on purpose: a dropped instance must still be found here to stop its broker.
_unclosed: set[LocalKafka] = set()


@atexit.register
def _close_unclosed() -> None:
    for broker in list(_unclosed):
        with contextlib.suppress(Exception):
            broker.close()


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the broker if this process dies uncleanly.

    atexit does not run when the test process is SIGKILLed or os._exit()s (pytest-timeout's
    thread method does), which would orphan the JVM. PDEATHSIG fires when the *thread* that
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


def _probe_metadata(
    bootstrap_servers: str, timeout: float, auth: Mapping[str, Any] | None = None
) -> None:
    """One real metadata round trip, on a private event loop in a helper thread.

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


def _pick_free_ports(count: int) -> tuple[int, ...]:
    # Every socket stays bound until all ports are chosen so the kernel cannot hand out the
    # same port twice.
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((_HOST, 0))
        return tuple(int(sock.getsockname()[1]) for sock in sockets)


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The broker leads its own process group (start_new_session), so the group id is its pid.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _new_cluster_id() -> str:
    # Same shape as `StorageTool random-uuid` without paying for a JVM start: 22 chars of
    # URL-safe base64. Kafka rejects ids starting with '-' (they parse as command-line flags).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_property(key: str, value: str) -> None:
    if not key or any(ch in key for ch in " \t=:#!\\\r\n"):
        raise LocalKafkaError(f"not a usable broker property name: {key!r}")
    if "\n" in value or "\r" in value:
        raise LocalKafkaError(f"broker property {key} has a line break in its value")


def _escape_property(value: str) -> str:
    # java.util.Properties treats backslash as an escape and strips leading blanks.
    escaped = value.replace("\\", "\\\\")
    if escaped[:1] in (" ", "\t"):
        escaped = "\\" + escaped
    return escaped


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
