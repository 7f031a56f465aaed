"""How every Kafka client of ccc-guard connects: the one place settings become client options.

``KafkaConnection.from_config`` resolves a ``ConnectionConfig`` once (reads the password file,
loads the CA bundle and client certificate into one TLS context) and hands it out as aiokafka
keyword arguments (admin client, producers, consumers; the app turns the same values into
Faust's ``broker_credentials``).

Nothing here prints the password: ``KafkaConnection``'s repr masks it, ``describe()`` names only
the protocol, mechanism and user, and a failed start is explained by ``connect_error`` from the
exception's class, never from the client's arguments. Importing this module also redacts the SASL
exchange from aiokafka's DEBUG log (see ``RedactSaslExchange``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from topics.config import ConnectionConfig, Secret
from topics.errors import BrokerConnectionError, ConfigError

_PROBE_TIMEOUT_S = 15.0
_SASL_AUTHENTICATE_API_KEY = 36


class RedactSaslExchange(logging.Filter):
    """aiokafka's connection logs every request and response at DEBUG, SaslAuthenticate ones
    included: with PLAIN the request carries the password itself, with SCRAM the salt, nonces
    and proof (enough to guess the password offline). Such records keep their text but show
    only the message type."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_sasl_exchange, record.args)):
            record.args = tuple(
                f"{type(arg).__name__}(<redacted>)" if _is_sasl_exchange(arg) else arg
                for arg in record.args
            )
        return True


def _is_sasl_exchange(arg: object) -> bool:
    return getattr(arg, "API_KEY", None) == _SASL_AUTHENTICATE_API_KEY


def redact_sasl_logging() -> None:
    """Install ``RedactSaslExchange`` on aiokafka's connection logger (once)."""
    logger = logging.getLogger("aiokafka.conn")
    if not any(isinstance(f, RedactSaslExchange) for f in logger.filters):
        logger.addFilter(RedactSaslExchange())


# On import: the worker, the topic tools and the clients all import this module before they
# open a connection.
redact_sasl_logging()


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate to them."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    ssl_cafile: str | None = None  # only for describe(); the context holds what was loaded

    @classmethod
    def plaintext(cls, bootstrap_servers: str) -> KafkaConnection:
        return cls(bootstrap_servers)

    @classmethod
    def from_config(cls, config: ConnectionConfig) -> KafkaConnection:
        """Raises ``ConfigError`` when the password file or a PEM file cannot be used."""
        context = None
        if config.uses_tls:
            context = _tls_context(config.ssl_cafile, config.ssl_certfile, config.ssl_keyfile)
        sasl = config.uses_sasl
        return cls(
            bootstrap_servers=config.bootstrap_servers,
            security_protocol=config.security_protocol,
            sasl_mechanism=config.sasl_mechanism if sasl else None,
            sasl_username=config.sasl_username if sasl else None,
            sasl_password=config.read_sasl_password() if sasl else None,
            ssl_context=context,
            ssl_cafile=config.ssl_cafile or None,
        )

    def aiokafka_auth(self) -> dict[str, Any]:
        """Security keyword arguments of aiokafka's clients (``bootstrap_servers`` excluded)."""
        auth: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            auth["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            auth["sasl_mechanism"] = self.sasl_mechanism
            auth["sasl_plain_username"] = self.sasl_username
            auth["sasl_plain_password"] = (self.sasl_password or Secret("")).reveal()
        return auth

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """``bootstrap_servers`` and the security keyword arguments of aiokafka's clients."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.aiokafka_auth()}

    def describe(self) -> str:
        """How this connects, for logs: protocol, mechanism, user and CA file; no secret."""
        parts = [self.security_protocol]
        if self.sasl_mechanism is not None:
            parts.append(f"{self.sasl_mechanism} as user {self.sasl_username!r}")
        if self.ssl_context is not None:
            parts.append(f"CA {self.ssl_cafile}" if self.ssl_cafile else "system CAs")
        return ", ".join(parts)


def as_connection(connection: KafkaConnection | str) -> KafkaConnection:
    """A bare string is a PLAINTEXT bootstrap list (tests, local tools)."""
    if isinstance(connection, str):
        return KafkaConnection.plaintext(connection)
    return connection


async def start_client(
    start: Awaitable[None], connection: KafkaConnection, timeout_s: float
) -> None:
    """Await an aiokafka client's ``start()``; if it cannot reach or authenticate to any
    broker, raise ``BrokerConnectionError`` saying why (aiokafka itself only says "Unable to
    bootstrap", having logged each broker's error)."""
    try:
        await asyncio.wait_for(start, timeout_s)
    except (KafkaConnectionError, TimeoutError) as exc:
        reason = await connect_error(connection)
        raise BrokerConnectionError(
            f"cannot connect to Kafka at {connection.bootstrap_servers} "
            f"({connection.describe()}): {reason if reason else repr(exc)}"
        ) from None


async def connect_error(connection: KafkaConnection) -> str | None:
    """Why a connection to each bootstrap broker fails, one clause per broker; ``None`` if one
    of them accepts this connection after all."""
    reasons = []
    for server in connection.bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id="ccc-guard-probe",
                    request_timeout_ms=int(_PROBE_TIMEOUT_S * 1000),
                    **connection.aiokafka_auth(),
                ),
                _PROBE_TIMEOUT_S + 1,
            )
        except Exception as exc:  # every failure is explained, none is fatal here
            reasons.append(f"{server}: {_explain(exc, connection)}")
        else:
            conn.close()
            return None
    return "; ".join(reasons)


def _explain(exc: BaseException, connection: KafkaConnection) -> str:
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"authentication failed for user {connection.sasl_username!r} with "
            f"{connection.sasl_mechanism} (wrong user name or password, or no "
            f"{connection.sasl_mechanism} credentials for that user)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"the broker does not offer {connection.sasl_mechanism} on this listener: set "
            "CCC_KAFKA_SASL_MECHANISM to one it does"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the broker's TLS certificate is not trusted ({exc.verify_message}): "
            "set CCC_KAFKA_SSL_CAFILE to the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason}): does this listener speak TLS?"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return (
            f"no answer within {_PROBE_TIMEOUT_S:g} s (does the listener expect "
            f"{connection.security_protocol}?)"
        )
    if isinstance(exc, KafkaConnectionError):
        # What a PLAINTEXT or SASL_PLAINTEXT client meets at a TLS listener, among others.
        return (
            "the broker closed the connection during the handshake: does this listener expect "
            f"{connection.security_protocol}?"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return f"cannot connect ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}"


def _tls_context(cafile: str, certfile: str, keyfile: str) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile or None)
    except (ssl.SSLError, OSError) as exc:
        where = f"CCC_KAFKA_SSL_CAFILE={cafile!r}" if cafile else "the system's CA store"
        raise ConfigError(f"{where} cannot be loaded: {_ssl_reason(exc)}") from None
    if certfile:

        def no_key_password() -> str:
            # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
            raise ConfigError("CCC_KAFKA_SSL_KEYFILE is encrypted; give an unencrypted key")

        try:
            context.load_cert_chain(certfile, keyfile or None, password=no_key_password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"CCC_KAFKA_SSL_CERTFILE={certfile!r} / CCC_KAFKA_SSL_KEYFILE={keyfile!r} "
                f"cannot be loaded: {_ssl_reason(exc)}"
            ) from None
    return context


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
