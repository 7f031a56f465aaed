"""What the local node is told: its ``server.properties``, the admin's client properties and the
JVM's options. Pure functions of ports and paths, so they are tested without a broker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import LocalKafkaError
from .ports import HOST

NODE_ID: Final = 1
LOG4J_CONFIG: Final = Path(__file__).with_name("log4j2.properties")

SCRAM_MECHANISM: Final = "SCRAM-SHA-512"
ADMIN_USER: Final = "admin"
SCRAM_LOGIN_MODULE: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
_AUTHORIZER: Final = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_SASL_LISTENER: Final = "listener.name.sasl_ssl"

# Settings the instance owns: overriding them through extra_config would desynchronise the
# ports, node id or data directory that start()/stop()/bootstrap_servers rely on.
RESERVED_KEYS: Final = frozenset(
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
SECURED_KEYS: Final = frozenset(
    {"authorizer.class.name", "super.users", "allow.everyone.if.no.acl.found"}
)

JVM_BROKER_OPTS: Final = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    # An out-of-memory broker that keeps running only shows up as a test timeout much later.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# Tools (StorageTool, AclCommand) run for a second or two: the client compiler alone and the
# serial collector halve their start-up (kafka-acls: ~3.4 s -> ~1.5 s on two busy cores).
JVM_TOOL_OPTS: Final = (
    "-Xmx256m",
    "-Djava.awt.headless=true",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
)


@dataclass(frozen=True, slots=True)
class Listeners:
    """The node's ports: clients (PLAINTEXT), the controller, and, secured, SASL_SSL."""

    client: int
    controller: int
    sasl_ssl: int | None = None

    @property
    def count(self) -> int:
        return 2 if self.sasl_ssl is None else 3


def check_extra_config(extra: Mapping[str, str], *, secured: bool) -> dict[str, str]:
    """``extra`` as a dict, or ``LocalKafkaError`` naming what it may not set or cannot say."""
    reserved = sorted(
        key
        for key in extra
        if key in RESERVED_KEYS
        or (secured and (key in SECURED_KEYS or key.startswith("listener.")))
    )
    if reserved:
        raise LocalKafkaError(f"extra_config may not set {', '.join(reserved)}")
    for key, value in extra.items():
        _check_property(key, value)
    return dict(extra)


def server_properties(
    listeners: Listeners,
    *,
    data_dir: Path,
    keystore: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every setting of the node; ``keystore`` (PEM) is required with a SASL_SSL port."""
    port, controller_port = listeners.client, listeners.controller
    config = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
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
    if listeners.sasl_ssl is not None:
        if keystore is None:
            raise LocalKafkaError("a SASL_SSL listener needs a keystore")
        config.update(_sasl_ssl_properties(listeners, listeners.sasl_ssl, keystore))
    config.update(extra or {})
    return config


def _sasl_ssl_properties(listeners: Listeners, sasl_port: int, keystore: Path) -> dict[str, str]:
    port, controller_port = listeners.client, listeners.controller
    return {
        "listeners": (
            f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port},"
            f"SASL_SSL://{HOST}:{sasl_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port},SASL_SSL://{HOST}:{sasl_port}",
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"
        ),
        f"{_SASL_LISTENER}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"{_SASL_LISTENER}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            f"{SCRAM_LOGIN_MODULE} required;"
        ),
        f"{_SASL_LISTENER}.ssl.keystore.type": "PEM",
        f"{_SASL_LISTENER}.ssl.keystore.location": str(keystore),
        f"{_SASL_LISTENER}.ssl.client.auth": "none",
        "authorizer.class.name": _AUTHORIZER,
        # ANONYMOUS is the principal of the node's own PLAINTEXT and controller listeners:
        # without it the broker cannot even register with its controller.
        "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
    }


def admin_client_properties(password: str, ca_file: Path) -> dict[str, str]:
    """A Java client's settings (``--command-config`` of Kafka's CLI tools) that connect to the
    SASL_SSL listener as ``admin``."""
    jaas = f'{SCRAM_LOGIN_MODULE} required username="{ADMIN_USER}" password="{password}";'
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.jaas.config": jaas,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file),
    }


def render_properties(properties: Mapping[str, str]) -> str:
    """``properties`` in ``java.util.Properties`` syntax, one ``key=value`` a line."""
    return "".join(f"{key}={_escape_property(value)}\n" for key, value in properties.items())


def jvm_logging_opts(log_dir: Path) -> list[str]:
    """Options that send a broker's or tool's log4j output to ``log_dir``, as our log4j2
    configuration lays it out."""
    return [
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG.resolve().as_uri()}",
        f"-Dkafka.logs.dir={log_dir}",
    ]


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
