"""The one timer the benchmark scripts share: run a callable several times, report the median
(and the spread) of its wall times and the last result."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Timing:
    median: float  # seconds
    low: float
    high: float
    result: Any  # what the last run returned


def timed(fn: Callable[[], Any], runs: int = 5) -> Timing:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return Timing(statistics.median(times), min(times), max(times), result)
