"""Which listings await certificate answers, when each is due to ask again, and when a watch
last subscribed again.

The safety net under at-least-once delivery (see ``listing_side.reask``): a check that has
awaited an answer for ``after_s`` asks again. Re-asks back off (doubling, up to ``MAX_WAIT_S``)
and each round is capped, so a worker that is merely behind — answers slow, not lost — adds
a bounded trickle of load instead of a storm of duplicates.

In memory only: it is rebuilt from the listings table after every rebalance (``replace``), so
a listing whose state was recovered rather than processed here is still covered.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_WAIT_S = 600.0
# Re-subscriptions remembered before those older than a re-ask wait are dropped.
_RESUBSCRIBED_KEPT = 10_000


@dataclass(slots=True)
class _Due:
    at: float  # monotonic seconds
    wait: float  # the wait that led to ``at``; doubled on every re-ask


class AwaitingTracker:
    def __init__(self, after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after_s, self.clock = after_s, clock
        self._due: dict[bytes, _Due] = {}
        self._resubscribed: dict[bytes, float] = {}  # watch key -> when it subscribed again

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: bytes) -> bool:
        return key in self._due

    def track(self, key: bytes, awaiting: bool) -> None:
        """After a listing's state changed: start its clock if it now awaits an answer (a clock
        already running keeps going), forget it if it does not."""
        if not awaiting:
            self._due.pop(key, None)
        elif key not in self._due:
            self._due[key] = _Due(self.clock() + self.after_s, self.after_s)

    def replace(self, awaiting: Iterable[bytes], tracked_since: float | None = None) -> None:
        """After a rebalance: these listings await answers here (others moved away or were
        answered); clocks already running are kept, and so are listings tracked since
        ``tracked_since`` (the scan that found ``awaiting`` started then and may have passed
        them before they began to wait)."""
        old, now = self._due, self.clock()
        due = {key: old.get(key) or _Due(now + self.after_s, self.after_s) for key in awaiting}
        if tracked_since is not None:
            for key, entry in old.items():
                if entry.at - entry.wait >= tracked_since:
                    due.setdefault(key, entry)
        self._due = due

    def due(self, limit: int) -> list[bytes]:
        """Up to ``limit`` listings whose re-ask is due, longest overdue first."""
        now = self.clock()
        overdue = ((due.at, key) for key, due in self._due.items() if due.at <= now)
        return [key for _, key in heapq.nsmallest(limit, overdue)]

    def resubscribe_due(self, watch: bytes) -> bool:
        """Whether a watch still unanswered subscribes again now: at most once per re-ask wait,
        however many of its claimers ask again (each subscription brings one more answer to
        scan the partition's claimers for)."""
        now = self.clock()
        last = self._resubscribed.get(watch)
        if last is not None and now - last < self.after_s:
            return False
        if len(self._resubscribed) >= _RESUBSCRIBED_KEPT:
            self._resubscribed = {
                key: at for key, at in self._resubscribed.items() if now - at < self.after_s
            }
        self._resubscribed[watch] = now
        return True

    def asked(self, key: bytes) -> None:
        due = self._due.get(key)
        if due is not None:
            due.wait = min(due.wait * 2, MAX_WAIT_S)
            due.at = self.clock() + due.wait
