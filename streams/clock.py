"""The one wall clock of ccc-guard, in epoch milliseconds (the unit of every timestamp on the
wire), and the length of a day in that unit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

DAY_MS: Final = 86_400_000

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
