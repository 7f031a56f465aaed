"""Every exception ccc-guard raises on purpose, in one place for callers.

The Kafka layer's errors (decoding, topic layout, connection) and the root ``CccGuardError``
live in ``topics/errors.py``, the development broker's in ``localkafka/errors.py``: those
packages import nothing of the app. They are re-exported here beside the app's own, so callers
catch the narrowest class they can act on from one module.
"""

from __future__ import annotations

from localkafka.errors import LocalKafkaError
from topics.errors import (
    BadMagicError,
    BrokerConnectionError,
    CccGuardError,
    ConfigError,
    DecodeError,
    MalformedBodyError,
    RejectedRecordError,
    TopicLayoutError,
    UnknownSchemaError,
)

__all__ = [
    "BadMagicError",
    "BrokerConnectionError",
    "CccGuardError",
    "ChangelogNotAcknowledged",
    "ConfigError",
    "DecodeError",
    "InvalidRecordError",
    "LocalKafkaError",
    "MalformedBodyError",
    "PartitionsMovedError",
    "QueryFailedError",
    "QueryUnavailableError",
    "RejectedRecordError",
    "StateFormatError",
    "StaticMembershipError",
    "TopicLayoutError",
    "UnknownSchemaError",
]


class InvalidRecordError(RejectedRecordError):
    """The record decoded but breaks a rule of the contract (empty id, absurd size, wrong key)."""

    kind = "invalid_record"


class ChangelogNotAcknowledged(CccGuardError):
    """Offsets must not be committed: a table write is not (or never will be) in its changelog.
    Raised in the commit path (``streams/faust_adapter.py``); the worker stops rather than
    commit past a state change that may be lost."""


class StateFormatError(CccGuardError):
    """A table value is not in the state format this version writes: the store or changelog
    holds state of an older ccc-guard (or not ccc-guard's at all). Not the input record's
    fault, so the worker stops rather than dead-letter every event; the README's upgrade
    section says what to do."""


class StaticMembershipError(CccGuardError):
    """A worker restarted under its ``CCC_GROUP_INSTANCE_ID`` was handed back the assignment of
    its previous life, which names another web URL (host or port changed): Faust refuses it
    with a bare assertion. Raised instead, saying what to change."""


class QueryUnavailableError(CccGuardError):
    """A query cannot be answered right now without risking a wrong answer: this worker or
    another is rebalancing, or did not answer. The query API says 503 with Retry-After."""


class PartitionsMovedError(QueryUnavailableError):
    """A worker's partitions of a table changed while a query read them: a rebalance is under
    way, and the answer could miss or repeat listings."""


class QueryFailedError(CccGuardError):
    """``ccc-guard explain``/``claimers`` could not get an answer (no token, refused,
    unreachable, still rebalancing); the message says why, for a person."""
