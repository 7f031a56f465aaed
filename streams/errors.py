"""Every exception ccc-guard raises on purpose, under one root.

Callers catch the narrowest class they can act on: a ``DecodeError`` or ``InvalidRecordError``
sends the record to the dead-letter topic, a ``ConfigError`` stops the worker at start.
"""

from __future__ import annotations


class CccGuardError(Exception):
    """Root of every error ccc-guard raises on purpose."""


class ConfigError(CccGuardError):
    """A setting is unknown, malformed or out of range; raised at start, never mid-stream."""


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


class InvalidRecordError(RejectedRecordError):
    """The record decoded but breaks a rule of the contract (empty id, absurd size, wrong key)."""

    kind = "invalid_record"


class TopicLayoutError(CccGuardError):
    """An existing topic disagrees with the catalogue (partition count) in a way that breaks
    co-partitioning; the worker refuses to start rather than mis-route state."""


class BrokerConnectionError(CccGuardError):
    """No bootstrap broker accepts the worker's connection (unreachable, TLS refused, or
    authentication failed); raised at start with the reason, never with a secret."""


class LocalKafkaError(CccGuardError):
    """The embedded development broker could not be fetched, formatted or started."""


class ChangelogNotAcknowledged(CccGuardError):
    """Offsets must not be committed: a table write is not (or never will be) in its changelog.
    Raised in the commit path (``streams/faust_adapter.py``); the worker stops rather than
    commit past a state change that may be lost."""
