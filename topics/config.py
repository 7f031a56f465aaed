"""What the Kafka layer needs to know from outside: how to connect (``ConnectionConfig``, with
its ``Secret`` password) and how to name topics (``TopicNaming``, in ``topics/catalogue.py``).

The app's settings fill these values; the Kafka layer never reads the app's settings, so the
arrows point one way (``streams`` → ``topics``), as quix-streams' Kafka layer takes a typed
connection config rather than the application's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topics.errors import ConfigError


class Secret:
    """A value that must never be printed: ``str``, ``repr`` and formatting all give ``***``
    (or nothing when empty); ``reveal()`` gives the value to the one place that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return "***" if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling would write the value wherever the pickle goes (a queue, a file, a cache).
        raise TypeError("a Secret is not pickled")


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Where the brokers are and how to authenticate, as configured (files not yet read).
    Empty strings mean "not set"; the app's settings check which combinations make sense."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: Secret = Secret("")  # noqa: RUF009 (immutable)
    sasl_password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in {"SSL", "SASL_SSL"}

    def read_sasl_password(self) -> Secret:
        """The SASL password: ``sasl_password``, or ``sasl_password_file``'s content without
        its trailing line break. Raises ``ConfigError`` if the file cannot be read or is
        empty."""
        if not self.sasl_password_file:
            return self.sasl_password
        path = self.sasl_password_file
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"CCC_KAFKA_SASL_PASSWORD_FILE={path!r} cannot be read: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:  # its message would quote bytes of the password
            raise ConfigError(f"CCC_KAFKA_SASL_PASSWORD_FILE={path!r} is not UTF-8 text") from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"CCC_KAFKA_SASL_PASSWORD_FILE={path!r} is empty")
        return Secret(password)
