"""The one error of the development broker.

``localkafka`` is a tool of its own (tests, the demo and the benchmarks run it); it knows
nothing of ccc-guard, so its error derives from ``Exception`` alone. ``streams.errors``
re-exports it for callers that catch every error of the project in one place.
"""

from __future__ import annotations


class LocalKafkaError(Exception):
    """The embedded development broker could not be fetched, formatted or started."""
