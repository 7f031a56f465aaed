"""The errors of the Kafka layer, and the root every error of ccc-guard derives from.

``topics/`` is the ground floor: it imports nothing of the app, so the root lives here and the
app's own errors (``streams/errors.py``) build on it. Callers catch the narrowest class they can
act on: a ``DecodeError`` sends the record to the dead-letter topic, a ``ConfigError`` stops the
worker at start.
"""

from __future__ import annotations


class CccGuardError(Exception):
    """Root of every error ccc-guard raises on purpose."""


class ConfigError(CccGuardError):
    """A setting, a schema file or a security file is unknown, malformed or unusable; raised at
    start, never mid-stream."""


class RejectedRecordError(CccGuardError):
    """An input record that cannot be processed; it goes to the dead-letter topic.

    ``kind`` is a short, stable, low-cardinality label (for logs and metrics); the message is
    for a human deciding what to fix upstream.
    """

    kind = "rejected"


class DecodeError(RejectedRecordError):
    """The bytes are not a record of the wire contract."""

    kind = "undecodable"


class BadMagicError(DecodeError):
    """The value does not start with the Avro single-object marker ``C3 01``."""

    kind = "bad_magic"


class UnknownSchemaError(DecodeError):
    """The writer-schema fingerprint matches no schema version kept under ``avro/``."""

    kind = "unknown_schema"


class MalformedBodyError(DecodeError):
    """The Avro body is truncated, has trailing bytes, or does not match its writer schema."""

    kind = "malformed_body"


class TopicLayoutError(CccGuardError):
    """An existing topic disagrees with the catalogue (partition count) in a way that breaks
    co-partitioning; the worker refuses to start rather than mis-route state."""


class BrokerConnectionError(CccGuardError):
    """No bootstrap broker accepts the worker's connection (unreachable, TLS refused, or
    authentication failed); raised at start with the reason, never with a secret."""
