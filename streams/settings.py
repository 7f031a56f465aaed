"""All settings, read from environment variables, typed and validated at start.

Every setting is documented here and in the README; ``python -m streams.settings`` prints them
with their current values. Unknown ``CCC_*`` variables are refused, so a typo cannot silently
leave a default in force.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from streams.errors import ConfigError

PREFIX = "CCC_"
_HOST_PORT = re.compile(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._\-]{1,200}")


def _bootstrap(value: str) -> str:
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers or not all(_HOST_PORT.fullmatch(s) for s in servers):
        raise ValueError("expected a comma-separated list of host:port")
    return ",".join(servers)


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


def _setting(env: str, default: str, parse: Callable[[str], Any], doc: str) -> Any:
    return field(metadata={"env": env, "default": default, "parse": parse, "doc": doc})


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        _bootstrap,
        "Kafka brokers, comma-separated host:port.",
    )
    app_id: str = _setting(
        "CCC_APP_ID",
        "ccc-guard",
        _topic,
        "Consumer group and state namespace; internal and changelog topics are named after it.",
    )
    topic_prefix: str = _setting(
        "CCC_TOPIC_PREFIX",
        "",
        _prefix,
        "Prepended to the four external topic names; internal topics are named after CCC_APP_ID.",
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
        str,
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
        "CCC_WEB_HOST", "127.0.0.1", str, "Address the web server binds to (loopback by default)."
    )
    web_port: int = _setting(
        "CCC_WEB_PORT", "6066", _positive_int, "Web server port; one per worker on a host."
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
    max_record_bytes: int = _setting(
        "CCC_MAX_RECORD_BYTES",
        "65536",
        _positive_int,
        "Largest encoded input value accepted; checked before decoding.",
    )

    kafka_cache_dir: str = _setting(
        "CCC_KAFKA_CACHE",
        "~/.cache/ccc-guard",
        str,
        "Development only: where the local broker's jars from Maven Central are cached.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        known = {f.metadata["env"] for f in fields(cls)}
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
                raise ConfigError(f"{env}={raw!r} is invalid: {exc}") from None
        return cls(**values)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, current value, meaning) for every setting."""
        return [
            (f.metadata["env"], str(getattr(self, f.name)), f.metadata["doc"]) for f in fields(self)
        ]


if __name__ == "__main__":
    import os

    for env, value, doc in Settings.from_env(os.environ).describe():
        print(f"{env}={value}\n    {doc}")
