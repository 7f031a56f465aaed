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

This module is the node's lifecycle; ``config.py`` renders what it is told, ``process.py`` runs
and watches its JVM, ``secured.py`` holds the SASL_SSL listener's users and ACLs.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from .config import (
    ADMIN_USER,
    JVM_BROKER_OPTS,
    JVM_TOOL_OPTS,
    SCRAM_MECHANISM,
    Listeners,
    check_extra_config,
    jvm_logging_opts,
    render_properties,
    server_properties,
)
from .errors import LocalKafkaError
from .jars import DEFAULT_KAFKA_VERSION, ensure_broker_jars, find_java
from .ports import HOST, free_ports
from .probe import probe_metadata
from .process import (
    BrokerProcess,
    PortTakenError,
    StartupLogs,
    close_at_exit,
    closed,
    run_tool,
    wait_until_serving,
)
from .secured import SecuredListener, check_scram_users

__all__ = ["ADMIN_USER", "SCRAM_MECHANISM", "LocalKafka"]

_STOP_GRACE_S: Final = 15.0
_FORMAT_TIMEOUT_S: Final = 120.0
# Ports are picked by binding to port 0 and closing the socket, so another process can take one
# before the broker binds it; a fresh node simply gets new ports and tries again.
_BIND_ATTEMPTS: Final = 3


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
        secured = scram_users is not None
        self._extra_config = check_extra_config(extra_config or {}, secured=secured)
        self._scram_users = check_scram_users(scram_users) if scram_users is not None else None
        self._version = version
        self._requested_workdir = workdir
        self._startup_timeout = startup_timeout
        self._keep = keep

        self._workdir: Path | None = None
        self._owns_workdir = False
        self._listeners: Listeners | None = None
        self._process: BrokerProcess | None = None
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
        where = f" {self.bootstrap_servers}" if self._listeners else ""
        return f"<LocalKafka {self._version}{where} {state}>"

    # -- public state ----------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._version

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``; stable across stop()/start() of this instance."""
        return f"{HOST}:{self.port}"

    @property
    def port(self) -> int:
        """The client (PLAINTEXT) port."""
        return self._require_listeners().client

    @property
    def controller_port(self) -> int:
        return self._require_listeners().controller

    # -- secured mode ----------------------------------------------------------------------

    @property
    def secured(self) -> bool:
        """Whether the node has the SASL_SSL listener (``scram_users`` was given)."""
        return self._scram_users is not None

    @property
    def sasl_ssl_port(self) -> int:
        """The SASL_SSL (SCRAM-SHA-512, ACLs enforced) client port of a secured node."""
        self._require_secured()
        port = self._require_listeners().sasl_ssl
        assert port is not None  # a secured node always picks three ports
        return port

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>`` of the SASL_SSL listener; stable across stop()/start()."""
        return f"{HOST}:{self.sasl_ssl_port}"

    @property
    def ca_file(self) -> Path:
        """PEM certificate of the throwaway CA that signed the SASL_SSL listener's certificate
        (for ``localhost`` and ``127.0.0.1``): what clients trust."""
        return self._require_secured().ca_file

    @property
    def admin_password(self) -> str:
        """Password of the ``admin`` super user (random, made when the node is formatted)."""
        return self._require_secured().admin_password

    @property
    def admin_client_properties(self) -> Path:
        """A Java client properties file (``--command-config`` of Kafka's CLI tools) that
        connects to the SASL_SSL listener as ``admin``."""
        return self._require_secured().admin_client_properties

    def acl_command(self, args: Sequence[str]) -> str:
        """Run Kafka's ``kafka-acls`` (``AclCommand``) as ``admin`` over SASL_SSL with ``args``
        (``--add --allow-principal User:alice --operation Read --topic t`` ...); returns its
        output. The node must be running."""
        listener = self._require_secured()
        if not self.is_running:
            raise LocalKafkaError("the broker is not running")
        return listener.acl_command(self._tool_command(), self.sasl_bootstrap_servers, args)

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LocalKafkaError("the broker has no working directory yet: call start() first")
        return self._workdir

    @property
    def server_log(self) -> Path:
        """The broker's log4j log; it accumulates across restarts of the node."""
        return self._log_dir / "server.log"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.running else None

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
        # A broker that died on its own is forgotten, so start() relaunches it.
        self._process = None
        close_at_exit(self)
        lib = ensure_broker_jars(self._version)
        self._ensure_workdir()
        for directory in (self._data_dir, self._log_dir):
            directory.mkdir(parents=True, exist_ok=True)

        fresh_ports = self._listeners is None
        if self._listeners is None:
            self._listeners = self._pick_listeners()
        formatted = (self._data_dir / "meta.properties").is_file()
        secured = self._secured_listener()
        if secured is not None:
            secured.prepare(formatted=formatted)
        self._write_config()
        if not formatted:
            self._format(lib)

        attempts = _BIND_ATTEMPTS if fresh_ports else 1
        for attempt in range(1, attempts + 1):
            try:
                self._launch_and_wait(lib)
                return self
            except PortTakenError as exc:
                if attempt == attempts:
                    raise LocalKafkaError(str(exc)) from None
                # With static voters the ports are not part of the formatted data, so the same
                # node can simply move to new ones.
                self._listeners = self._pick_listeners()
                self._write_config()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, up to 15 s for a clean shutdown, then SIGKILL. Keeps ports and data.

        Idempotent.
        """
        if self._process is not None:
            self._process.stop(_STOP_GRACE_S)
        self._process = None

    def kill(self) -> None:
        """SIGKILL the broker at once (a crash, for fault tests). Keeps ports and data."""
        if self._process is not None:
            self._process.kill()
        self._process = None

    def close(self) -> None:
        """Stop the broker and delete its working directory if this instance created it.

        After close() a start() begins again with a brand-new node on new ports.
        """
        self.stop()
        closed(self)
        if self._workdir is not None and self._owns_workdir and not self._keep:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False
            self._listeners = None

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

    def _require_listeners(self) -> Listeners:
        if self._listeners is None:
            raise LocalKafkaError("the broker has no ports yet: call start() first")
        return self._listeners

    def _pick_listeners(self) -> Listeners:
        return Listeners(*free_ports(3 if self.secured else 2))

    def _secured_listener(self) -> SecuredListener | None:
        if self._scram_users is None:
            return None
        return SecuredListener(self.workdir, self._scram_users)

    def _require_secured(self) -> SecuredListener:
        listener = self._secured_listener()
        if listener is None:
            raise LocalKafkaError("this node has no SASL_SSL listener: pass scram_users=...")
        return listener

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            if self._requested_workdir is not None:
                self._workdir = self._requested_workdir.resolve()
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="localkafka-"))
                self._owns_workdir = True
        return self._workdir

    def _write_config(self) -> None:
        secured = self._secured_listener()
        properties = server_properties(
            self._require_listeners(),
            data_dir=self._data_dir,
            keystore=secured.keystore if secured is not None else None,
            extra=self._extra_config,
        )
        tmp = self._config_file.with_suffix(".tmp")
        tmp.write_text(render_properties(properties), encoding="utf-8")
        tmp.replace(self._config_file)
        if secured is not None:
            secured.write_admin_client_properties()

    def _tool_command(self, lib: Path | None = None) -> list[str]:
        """A Kafka tool's JVM command line, up to its main class."""
        lib = lib if lib is not None else ensure_broker_jars(self._version)
        return [
            find_java(),
            *JVM_TOOL_OPTS,
            *jvm_logging_opts(self._log_dir),
            "-cp",
            str(lib / "*"),
        ]

    def _format(self, lib: Path) -> None:
        secured = self._secured_listener()
        command = [
            *self._tool_command(lib),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _new_cluster_id(),
            "-c",
            str(self._config_file),
            # No --standalone: the static controller.quorum.voters already names the only voter,
            # and StorageTool refuses the two together.
            *(secured.format_args() if secured is not None else []),
        ]
        what = f"formatting the Kafka storage in {self._data_dir}"
        run_tool(command, cwd=self.workdir, timeout_s=_FORMAT_TIMEOUT_S, what=what)

    def _launch_and_wait(self, lib: Path) -> None:
        command = [
            find_java(),
            *JVM_BROKER_OPTS,
            *jvm_logging_opts(self._log_dir),
            "-cp",
            str(lib / "*"),
            "kafka.Kafka",
            str(self._config_file),
        ]
        logs = StartupLogs(self.server_log, self._stdout_file)
        started_at = time.monotonic()
        self._process = BrokerProcess(command, cwd=self.workdir, stdout_file=self._stdout_file)
        try:
            wait_until_serving(
                self._process,
                logs,
                started_at=started_at,
                timeout_s=self._startup_timeout,
                port=self.port,
                probe=self._probe,
                ports=f"{self.bootstrap_servers} or controller port {self.controller_port}",
                workdir=self.workdir,
            )
        except BaseException:
            self.stop()
            raise
        self._startup_seconds = time.monotonic() - started_at

    def _probe(self, timeout: float) -> None:
        probe_metadata(self.bootstrap_servers, timeout)
        secured = self._secured_listener()
        if secured is not None:
            # Proves the TLS keystore and the admin's SCRAM credentials work.
            probe_metadata(self.sasl_bootstrap_servers, timeout, secured.admin_auth())


def _new_cluster_id() -> str:
    # Same shape as `StorageTool random-uuid` without paying for a JVM start: 22 chars of
    # URL-safe base64. Kafka rejects ids starting with '-' (they parse as command-line flags).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
