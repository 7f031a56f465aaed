"""A real, throwaway Kafka broker for development and integration tests.

``LocalKafka`` runs the genuine Apache Kafka broker (fetched from Maven Central by
``ensure_broker_jars``) as a single combined KRaft node on free loopback ports. ``python -m
localkafka`` runs one in the foreground for manual work.
"""

from __future__ import annotations

from .broker import LocalKafka
from .jars import DEFAULT_KAFKA_VERSION, ensure_broker_jars

__all__ = ["DEFAULT_KAFKA_VERSION", "LocalKafka", "ensure_broker_jars"]
