"""What the demo shows: a line per verdict as it arrives, and when it stops a short summary of
what was sent and decided. Development only: the worker never imports this module."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Reasons of these actions are why listings were kept off or taken off the platforms.
_BLOCKING = frozenset({"BLOCK", "TAKEDOWN"})
_ACTIONS = ("ALLOW", "BLOCK", "TAKEDOWN", "RESTORE")
# An expiry's event time is the certificate's expiry, not when anything was sent.
_TIMED_TRIGGERS = frozenset({"LISTING_EVENT", "CERTIFICATE_CHANGE"})


def format_verdict(v: Mapping[str, Any]) -> str:
    at = datetime.fromtimestamp(v["decided_at"] / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    why = ",".join(v["reasons"]) or "-"
    failing = f" failing={','.join(v['failing_certs'])}" if v["failing_certs"] else ""
    return (
        f"{at} {v['action']:8} {v['platform']:9} {v['listing_id']:9} {why}{failing}"
        f"  [{v['trigger']} {v['trigger_id']}]"
    )


def format_shop_alert(alert: Mapping[str, Any]) -> str:
    latest = ",".join(alert["sample_listing_ids"][:3]) or "-"
    return (
        f"--- shop alert: {alert['kind']} {alert['platform']}/{alert['shop_id']}: "
        f"{alert['takedowns']} takedowns, {alert['blocks']} blocks in {alert['window_days']} days "
        f"({alert['distinct_listings']} listings; latest {latest})"
    )


def dead_letter_kind(dead_letter: Mapping[str, Any]) -> str:
    """The stable kind an error starts with (``bad_magic``, ``malformed_body``, ...)."""
    return str(dead_letter["error"]).split(":", 1)[0]


@dataclasses.dataclass
class Tally:
    """Counts of one demo run, as the feed sends and the readers receive."""

    listing_events: int = 0
    status_changes: int = 0
    initial_certificates: int = 0
    undecodable: int = 0
    actions: Counter[str] = dataclasses.field(default_factory=Counter)
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    dead_letters: Counter[str] = dataclasses.field(default_factory=Counter)
    shop_alerts: Counter[str] = dataclasses.field(default_factory=Counter)
    latencies_ms: list[int] = dataclasses.field(default_factory=list)

    @property
    def verdicts(self) -> int:
        return sum(self.actions.values())

    def verdict(self, verdict: Mapping[str, Any], received_ms: int) -> None:
        action = str(verdict["action"])
        self.actions[action] += 1
        if action in _BLOCKING:
            self.reasons.update(str(reason) for reason in verdict["reasons"])
        if verdict["trigger"] in _TIMED_TRIGGERS:
            self.latencies_ms.append(max(received_ms - int(verdict["event_time"]), 0))

    def dead_letter(self, dead_letter: Mapping[str, Any]) -> None:
        self.dead_letters[dead_letter_kind(dead_letter)] += 1

    def shop_alert(self, alert: Mapping[str, Any]) -> None:
        self.shop_alerts[str(alert["kind"])] += 1

    def summary(self, seconds: float) -> str:
        actions = ", ".join(f"{action} {self.actions[action]}" for action in _ACTIONS)
        lines = [
            f"--- summary of {seconds:.0f} s ---",
            f"sent:         {self.listing_events} listing events, {self.status_changes} "
            f"status changes of {self.initial_certificates} certificates, "
            f"{self.undecodable} undecodable",
            f"verdicts:     {self.verdicts} ({actions})",
            f"blocking:     {_counts(self.reasons)}",
            f"takedowns:    {self.actions['TAKEDOWN']}, restores: {self.actions['RESTORE']}",
            f"dead letters: {sum(self.dead_letters.values())} ({_counts(self.dead_letters)})",
            f"shop alerts:  {sum(self.shop_alerts.values())} ({_counts(self.shop_alerts)})",
            f"latency:      {self._latency()}",
        ]
        return "\n".join(lines)

    def _latency(self) -> str:
        values = self.latencies_ms
        if len(values) < 2:
            return "too few verdicts to tell"
        percentiles = statistics.quantiles(values, n=100, method="inclusive")
        return (
            f"p50 {percentiles[49]:.0f} ms, p99 {percentiles[98]:.0f} ms "
            f"(event time -> verdict received, {len(values)} verdicts)"
        )


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common()) or "none"
