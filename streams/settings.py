"""All settings, read from environment variables, typed and validated at start.

Every setting is documented here and in the README; ``python -m streams.settings`` prints them
with their current values (the SASL password masked). Unknown ``CCC_*`` variables are refused, so
a typo cannot silently leave a default in force.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from streams.errors import ConfigError
from streams.rules import ModelPolicy, Rules
from streams.shop_risk import Thresholds
from topics.catalogue import TopicNaming
from topics.config import ConnectionConfig, Secret

PREFIX = "CCC_"
_HOST_PORT = re.compile(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._\-]{1,200}")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._\-]{1,249}")

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _bootstrap(value: str) -> str:
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers or not all(_HOST_PORT.fullmatch(s) for s in servers):
        raise ValueError("expected a comma-separated list of host:port")
    if not all(0 < int(s.rsplit(":", 1)[1]) < 65536 for s in servers):
        raise ValueError("ports are 1-65535")
    return ",".join(servers)


def _port(value: str) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError("expected a port, 1-65535")
    return number


def _web_host(value: str) -> str:
    """Faust builds the worker's URL from it (``http://<host>:<port>``) and binds to it, so an
    IPv6 literal (which would need brackets in the URL and none to bind) is refused."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.fullmatch(value):
            raise ValueError(
                "expected a host name or an IPv4 address, without scheme or port"
            ) from None
        return value
    if address.version != 4:
        raise ValueError("an IPv6 address cannot be put in Faust's URL: use a host name")
    return value


def _advertised_host(value: str) -> str:
    if not value:
        return value
    if value == "0.0.0.0":
        raise ValueError("0.0.0.0 is a bind address, not one another worker can reach")
    return _web_host(value)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be ≥ 1")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be ≥ 0")
    return number


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be {low}-{high}")
        return number

    return parse


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be > 0")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false")


def _topic(value: str) -> str:
    if not _TOPIC_NAME.fullmatch(value):
        raise ValueError("topic names are 1-200 of [A-Za-z0-9._-]")
    return value


def _instance_id(value: str) -> str:
    if value and not _INSTANCE_ID.fullmatch(value):
        raise ValueError("expected empty or 1-249 of [A-Za-z0-9._-] (a pod name, say)")
    return value


def _data_dir(value: str) -> str:
    """A directory, or a path one can be made at: no file in the way. Faust expands ``{...}``
    in it with ``str.format``; ccc-guard escapes that (see ``app.py``), so any path is taken
    literally."""
    if not value.strip():
        raise ValueError("must not be empty")
    path = Path(value).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise ValueError("exists and is not a directory")
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    except OSError as exc:
        raise ValueError(f"cannot be examined ({exc.strerror})") from None
    if not existing.is_dir():
        raise ValueError(f"cannot be created: {existing} is a file")
    return value


def _prefix(value: str) -> str:
    if value and not _TOPIC_NAME.fullmatch(value):
        raise ValueError("may only hold [A-Za-z0-9._-]")
    return value


def _store(value: str) -> str:
    if value not in {"rocksdb://", "memory://"}:
        raise ValueError("expected rocksdb:// or memory://")
    return value


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in {"CRITICAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG"}:
        raise ValueError("expected one of critical, error, warning, info, debug")
    return level.lower()


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.strip().upper()
        if chosen not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return chosen

    return parse


def _existing_file(value: str) -> str:
    """An optional path: empty, or a readable regular file."""
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError("no such file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    return str(path)


def _model_policy(value: str) -> ModelPolicy:
    return ModelPolicy(_choice(*ModelPolicy)(value))


def _model_policy_by_platform(value: str) -> dict[str, ModelPolicy]:
    """``platform=POLICY`` pairs, comma-separated: ``jd=BLOCK,tmall=WARN``."""
    chosen: dict[str, ModelPolicy] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        platform, equals, policy = pair.partition("=")
        platform = platform.strip()
        if not equals or not platform:
            raise ValueError(f"{pair!r} is not platform=BLOCK or platform=WARN")
        if platform in chosen:
            raise ValueError(f"platform {platform!r} is given twice")
        try:
            chosen[platform] = _model_policy(policy)
        except ValueError as exc:
            raise ValueError(f"{platform}: {exc}") from None
    return chosen


# Variables of the same CCC_ namespace that other parts read on their own, so accepted here:
READ_ELSEWHERE: Final = {
    # Development only: where localkafka caches the broker's jars (localkafka/jars.py).
    "CCC_KAFKA_CACHE": "localkafka/jars.py",
}


def _setting(
    env: str, default: str, parse: Callable[[str], Any], doc: str, *, secret: bool = False
) -> Any:
    return field(
        metadata={"env": env, "default": default, "parse": parse, "doc": doc, "secret": secret}
    )


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        _bootstrap,
        "Kafka brokers, comma-separated host:port.",
    )
    kafka_security_protocol: str = _setting(
        "CCC_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _choice(*SECURITY_PROTOCOLS),
        "How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: str = _setting(
        "CCC_KAFKA_SASL_MECHANISM",
        "SCRAM-SHA-512",
        _choice(*SASL_MECHANISMS),
        "SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (PLAIN only over SASL_SSL).",
    )
    kafka_sasl_username: str = _setting(
        "CCC_KAFKA_SASL_USERNAME", "", str, "SASL user name; required with a SASL_* protocol."
    )
    # A Secret is immutable (no setter), which ruff cannot know.
    kafka_sasl_password: Secret = _setting(  # noqa: RUF009
        "CCC_KAFKA_SASL_PASSWORD",
        "",
        Secret,
        "SASL password (never printed); prefer CCC_KAFKA_SASL_PASSWORD_FILE. Give exactly one.",
        secret=True,
    )
    kafka_sasl_password_file: str = _setting(
        "CCC_KAFKA_SASL_PASSWORD_FILE",
        "",
        _existing_file,
        "File holding the SASL password (one trailing newline ignored), e.g. a mounted secret.",
    )
    kafka_ssl_cafile: str = _setting(
        "CCC_KAFKA_SSL_CAFILE",
        "",
        _existing_file,
        "PEM bundle of the CAs that sign the brokers' certificates; empty: the system's CAs.",
    )
    kafka_ssl_certfile: str = _setting(
        "CCC_KAFKA_SSL_CERTFILE",
        "",
        _existing_file,
        "Optional PEM client certificate (chain) for brokers that require TLS client auth.",
    )
    kafka_ssl_keyfile: str = _setting(
        "CCC_KAFKA_SSL_KEYFILE",
        "",
        _existing_file,
        "Unencrypted PEM private key of CCC_KAFKA_SSL_CERTFILE, unless that file holds it.",
    )
    app_id: str = _setting(
        "CCC_APP_ID",
        "ccc-guard",
        _topic,
        "Consumer group and state namespace; internal and changelog topics are named after it.",
    )
    group_instance_id: str = _setting(
        "CCC_GROUP_INSTANCE_ID",
        "",
        _instance_id,
        "Static group membership (KIP-345): a worker restarted under the same id takes its "
        "partitions back at once, with no rebalance and no wait for its old session to expire. "
        "Unique per worker and stable across restarts (the StatefulSet pod name); empty: "
        "dynamic membership. A static member does not leave the group when it stops: its "
        "partitions wait for it up to the session timeout.",
    )
    topic_prefix: str = _setting(
        "CCC_TOPIC_PREFIX",
        "",
        _prefix,
        "Prepended to the five external topic names; internal topics are named after CCC_APP_ID.",
    )
    listing_events_topic: str = _setting(
        "CCC_LISTING_EVENTS_TOPIC",
        "ccc.listing.events",
        _topic,
        "Input: listing events from platforms, keyed by listing_id.",
    )
    certificate_status_topic: str = _setting(
        "CCC_CERTIFICATE_STATUS_TOPIC",
        "ccc.certificate.status",
        _topic,
        "Input: certificate status changes from the authority feed, keyed by cert_no (compacted).",
    )
    verdicts_topic: str = _setting(
        "CCC_VERDICTS_TOPIC",
        "ccc.listing.verdicts",
        _topic,
        "Output: one verdict per decision, keyed by listing_id.",
    )
    deadletter_topic: str = _setting(
        "CCC_DEADLETTER_TOPIC",
        "ccc.deadletter",
        _topic,
        "Output: every rejected input record with the reason, keyed by the original key.",
    )
    shop_alerts_topic: str = _setting(
        "CCC_SHOP_ALERTS_TOPIC",
        "ccc.shop.alerts",
        _topic,
        "Output: repeat-offender alerts (RAISED, CLEARED), keyed by platform NUL shop_id.",
    )
    partitions: int = _setting(
        "CCC_PARTITIONS",
        "8",
        _positive_int,
        "Partitions of every topic and table; all must agree for lookups to be co-partitioned.",
    )
    replication_factor: int = _setting(
        "CCC_REPLICATION_FACTOR",
        "1",
        _positive_int,
        "Replication factor of topics the worker creates.",
    )
    store: str = _setting(
        "CCC_STORE",
        "rocksdb://",
        _store,
        "Table store: rocksdb:// (production: restarts replay only what changed) or memory://.",
    )
    data_dir: str = _setting(
        "CCC_DATA_DIR",
        "./ccc-guard-data",
        _data_dir,
        "Directory of the RocksDB state; one per worker process.",
    )
    standby_replicas: int = _setting(
        "CCC_STANDBY_REPLICAS",
        "1",
        _non_negative_int,
        "Warm standby copies of each table partition kept by other workers.",
    )
    web_enabled: bool = _setting(
        "CCC_WEB_ENABLED", "true", _bool, "Serve Faust's web endpoints (/metrics, health)."
    )
    web_host: str = _setting(
        "CCC_WEB_HOST",
        "127.0.0.1",
        _web_host,
        "Address the web server binds to (loopback by default).",
    )
    web_advertised_host: str = _setting(
        "CCC_WEB_ADVERTISED_HOST",
        "",
        _advertised_host,
        "Host other workers reach this one's web server at (the query API asks them); empty: "
        "CCC_WEB_HOST. Set it (a stable DNS name) when CCC_WEB_HOST is 0.0.0.0.",
    )
    web_port: int = _setting(
        "CCC_WEB_PORT", "6066", _port, "Web server port; one per worker on a host."
    )
    query_token_file: str = _setting(
        "CCC_QUERY_TOKEN_FILE",
        "",
        _existing_file,
        "File holding the query API's bearer token (one trailing newline ignored); empty: the "
        "API (/v1/...) is off. The ccc-guard explain/claimers commands read it too.",
    )
    query_timeout_s: float = _setting(
        "CCC_QUERY_TIMEOUT_SECONDS",
        "5",
        _positive_float,
        "A query API request not answered this long after it came is answered 504.",
    )
    log_level: str = _setting(
        "CCC_LOG_LEVEL", "info", _log_level, "Worker log level when -l is not given."
    )
    producer_linger_ms: int = _setting(
        "CCC_PRODUCER_LINGER_MS",
        "5",
        _non_negative_int,
        "How long the producer waits to batch records; trades latency for throughput.",
    )
    expiry_sweep_interval_s: float = _setting(
        "CCC_EXPIRY_SWEEP_INTERVAL_SECONDS",
        "60",
        _positive_float,
        "How often the certificate side looks for certificates past their valid-until day.",
    )
    reask_after_s: float = _setting(
        "CCC_REASK_AFTER_SECONDS",
        "30",
        _positive_float,
        "A listing check still awaiting a certificate's answer after this long asks again "
        "(a safety net: each re-ask is counted in ccc_guard_reasks_total).",
    )
    stop_timeout_s: float = _setting(
        "CCC_STOP_TIMEOUT_SECONDS",
        "30",
        _positive_float,
        "A worker told to stop (SIGTERM, SIGINT) that has not finished this long after exits "
        "anyway, committing nothing more (the broker may be gone); keep it under Kubernetes' "
        "terminationGracePeriodSeconds.",
    )
    progress_interval_s: float = _setting(
        "CCC_PROGRESS_INTERVAL_SECONDS",
        "30",
        _positive_float,
        "How often the worker logs a progress line (counts since the last line).",
    )
    max_certs_per_listing: int = _setting(
        "CCC_MAX_CERTS_PER_LISTING",
        "50",
        _positive_int,
        "Listing events claiming more certificates are dead-lettered.",
    )
    max_text_chars: int = _setting(
        "CCC_MAX_TEXT_CHARS",
        "2000",
        _positive_int,
        "Longest title or other free text accepted; longer records are dead-lettered.",
    )
    max_id_chars: int = _setting(
        "CCC_MAX_ID_CHARS",
        "200",
        _positive_int,
        "Longest id (event, listing, shop, platform) accepted.",
    )
    # _setting returns a dataclasses.field() spec, never a shared value, which ruff cannot know.
    model_mismatch: ModelPolicy = _setting(  # noqa: RUF009
        "CCC_MODEL_MISMATCH",
        "WARN",
        _model_policy,
        "What a listing model that no claimed certificate lists does: WARN (the verdict keeps "
        "its action and carries the warning MODEL_MISMATCH) or BLOCK (MODEL_MISMATCH is a "
        "reason: the listing is blocked, or taken down on a re-check). WARN by default so that "
        "an upgrade changes no action; a platform turns BLOCK on once it trusts its model data.",
    )
    model_mismatch_by_platform: dict[str, ModelPolicy] = _setting(  # noqa: RUF009
        "CCC_MODEL_MISMATCH_BY_PLATFORM",
        "",
        _model_policy_by_platform,
        "Per-platform choices that override CCC_MODEL_MISMATCH, as platform=POLICY pairs, "
        "comma-separated: jd=BLOCK,tmall=WARN.",
    )
    shop_alert_takedowns: int = _setting(
        "CCC_SHOP_ALERT_TAKEDOWNS",
        "3",
        _non_negative_int,
        "A shop with this many TAKEDOWN verdicts within its window is alerted (0: not used).",
    )
    shop_alert_blocks: int = _setting(
        "CCC_SHOP_ALERT_BLOCKS",
        "0",
        _non_negative_int,
        "A shop with this many BLOCK verdicts within its window is alerted (0: not used). At "
        "least one of the two thresholds must be used.",
    )
    shop_window_days: int = _setting(
        "CCC_SHOP_WINDOW_DAYS",
        "30",
        _bounded_int(1, 366),
        "Days (China Standard Time, today included) over which a shop's verdicts are counted.",
    )
    shop_alert_sample: int = _setting(
        "CCC_SHOP_ALERT_SAMPLE",
        "10",
        _bounded_int(1, 100),
        "Listing ids an alert carries as a sample, the latest offence first.",
    )
    shop_sweep_interval_s: float = _setting(
        "CCC_SHOP_SWEEP_INTERVAL_SECONDS",
        "600",
        _positive_float,
        "How often the shop side looks for shops a day has left the window of (to clear their "
        "alert or forget them) and refreshes the shop gauges.",
    )
    max_record_bytes: int = _setting(
        "CCC_MAX_RECORD_BYTES",
        "65536",
        _positive_int,
        "Largest encoded input value accepted; checked before decoding.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        known = {f.metadata["env"] for f in fields(cls)} | READ_ELSEWHERE.keys()
        unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            env, raw = f.metadata["env"], environ.get(f.metadata["env"], f.metadata["default"])
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                shown = "***" if f.metadata["secret"] else repr(raw)
                raise ConfigError(f"{env}={shown} is invalid: {exc}") from None
        settings = cls(**values)
        settings._check_kafka_security()
        if not (settings.shop_alert_takedowns or settings.shop_alert_blocks):
            raise ConfigError(
                "CCC_SHOP_ALERT_TAKEDOWNS and CCC_SHOP_ALERT_BLOCKS are both 0: set at least one"
            )
        return settings

    def connection_config(self) -> ConnectionConfig:
        """The Kafka layer's connection settings (password files not yet read)."""
        return ConnectionConfig(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            sasl_password_file=self.kafka_sasl_password_file,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
        )

    def topic_naming(self) -> TopicNaming:
        """The Kafka layer's topic names and layout."""
        return TopicNaming(
            app_id=self.app_id,
            external_prefix=self.topic_prefix,
            listing_events=self.listing_events_topic,
            certificate_status=self.certificate_status_topic,
            verdicts=self.verdicts_topic,
            deadletter=self.deadletter_topic,
            shop_alerts=self.shop_alerts_topic,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
        )

    @property
    def advertised_web_host(self) -> str:
        """The host in this worker's URL, as the other workers see it."""
        return self.web_advertised_host or self.web_host

    def query_token(self) -> bytes | None:
        """The query API's token, read from its file; None when the API is off."""
        if not self.query_token_file:
            return None
        try:
            token = Path(self.query_token_file).read_bytes().removesuffix(b"\n").strip()
        except OSError as exc:
            raise ConfigError(f"CCC_QUERY_TOKEN_FILE cannot be read ({exc.strerror})") from None
        if len(token) < 16:
            raise ConfigError("CCC_QUERY_TOKEN_FILE holds fewer than 16 characters: too guessable")
        return token

    def rules(self) -> Rules:
        """The rule choices of this deployment."""
        return Rules(self.model_mismatch, dict(self.model_mismatch_by_platform))

    def shop_thresholds(self) -> Thresholds:
        """When a shop is a repeat offender, in this deployment."""
        return Thresholds(
            takedowns=self.shop_alert_takedowns,
            blocks=self.shop_alert_blocks,
            window_days=self.shop_window_days,
            sample_size=self.shop_alert_sample,
        )

    @property
    def uses_sasl(self) -> bool:
        return self.connection_config().uses_sasl

    @property
    def uses_tls(self) -> bool:
        return self.connection_config().uses_tls

    def _check_kafka_security(self) -> None:
        """The security settings that only make sense together."""
        protocol = f"CCC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
        sasl_given = [
            env
            for env, value in (
                ("CCC_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("CCC_KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                ("CCC_KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file),
            )
            if value
        ]
        tls_given = [
            env
            for env, value in (
                ("CCC_KAFKA_SSL_CAFILE", self.kafka_ssl_cafile),
                ("CCC_KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile),
                ("CCC_KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile),
            )
            if value
        ]
        # Settings that would be silently ignored are refused: whoever set them expected them
        # to protect the connection.
        if sasl_given and not self.uses_sasl:
            raise ConfigError(
                f"{', '.join(sasl_given)} set, but {protocol} does not use SASL "
                "(use SASL_SSL or SASL_PLAINTEXT)"
            )
        if tls_given and not self.uses_tls:
            raise ConfigError(
                f"{', '.join(tls_given)} set, but {protocol} does not use TLS (use SSL or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ConfigError("CCC_KAFKA_SSL_KEYFILE is set without CCC_KAFKA_SSL_CERTFILE")
        if self.uses_sasl:
            missing = []
            if not self.kafka_sasl_username:
                missing.append("CCC_KAFKA_SASL_USERNAME")
            if not self.kafka_sasl_password and not self.kafka_sasl_password_file:
                missing.append("CCC_KAFKA_SASL_PASSWORD_FILE (or CCC_KAFKA_SASL_PASSWORD)")
            if missing:
                raise ConfigError(f"{protocol} needs {' and '.join(missing)}")
            if self.kafka_sasl_password and self.kafka_sasl_password_file:
                raise ConfigError(
                    "set only one of CCC_KAFKA_SASL_PASSWORD and CCC_KAFKA_SASL_PASSWORD_FILE"
                )
            if self.kafka_sasl_mechanism == "PLAIN" and not self.uses_tls:
                raise ConfigError(
                    "CCC_KAFKA_SASL_MECHANISM=PLAIN sends the password in clear text: "
                    "use it with CCC_KAFKA_SECURITY_PROTOCOL=SASL_SSL only"
                )

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, current value, meaning) for every setting; secrets show as ``***``."""
        return [
            (f.metadata["env"], _shown(getattr(self, f.name)), f.metadata["doc"])
            for f in fields(self)
        ]


def _shown(value: object) -> str:
    """A value as it would be written in its variable."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


if __name__ == "__main__":
    import os

    for env, value, doc in Settings.from_env(os.environ).describe():
        print(f"{env}={value}\n    {doc}")
