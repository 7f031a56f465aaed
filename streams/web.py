"""The worker's HTTP endpoints, on Faust's web server: metrics and health.

- ``/metrics``: Prometheus text format; Faust's sensors (``faust_*``) and ccc-guard's
  (``ccc_guard_*``) from one registry of this worker's own.
- ``/healthz``: liveness. Answering at all means the event loop runs; 200.
- ``/readyz``: readiness. 200 once partitions are assigned and every table is recovered, 503
  while rebalancing or recovering, so a load balancer or Kubernetes holds traffic and restarts
  rolling upgrades one worker at a time. Says nothing about data: no ids leave this endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry, disable_created_metrics

from streams.faust_adapter import is_ready
from streams.metrics import ConsumerLagCollector, GuardMetrics


def install_web(app: Any, consumed_topics: Iterable[str]) -> GuardMetrics:
    # "_created" series double every counter's output and no dashboard reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    # A fixed prefix keeps Faust's metric names the same whatever CCC_APP_ID is.
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    registry.register(ConsumerLagCollector(app, consumed_topics))
    metrics = GuardMetrics(registry)
    metrics.ready.set_function(lambda: 1.0 if is_ready(app) else 0.0)

    async def healthz(view: Any, request: Any) -> Any:
        return view.json({"status": "alive"})

    async def readyz(view: Any, request: Any) -> Any:
        if is_ready(app):
            return view.json({"status": "ready"})
        return view.json({"status": "not ready"}, status=503)

    app.page("/healthz")(healthz)
    app.page("/readyz")(readyz)
    return metrics
