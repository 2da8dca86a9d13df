"""Small measuring helpers the benchmarks share."""

from __future__ import annotations

import os

import numpy as np


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of durations in seconds, as milliseconds."""
    if not values:
        return {}
    a = np.array(values) * 1000
    return {f"p{p}_ms": round(float(np.percentile(a, p)), 1) for p in (50, 95, 99)}


def own_cpu_s() -> float:
    """User and system CPU seconds of this process so far."""
    t = os.times()
    return t.user + t.system
