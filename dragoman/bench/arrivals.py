"""Arrival patterns for load benchmarks: when each synthetic caller presses Call."""

from __future__ import annotations

import numpy as np

PATTERNS = ("burst", "ramp", "poisson")


def arrival_offsets(pattern: str, calls: int, duration_s: float, seed: int = 1) -> list[float]:
    """Seconds after the start at which each of ``calls`` callers presses Call.

    burst: all at once; ramp: evenly spread over ``duration_s``; poisson: exponential gaps
    with mean ``duration_s / calls`` (a memoryless crowd at that average rate).
    """
    if calls <= 0:
        return []
    if pattern == "burst":
        return [0.0] * calls
    if pattern == "ramp":
        step = duration_s / calls
        return [i * step for i in range(calls)]
    if pattern == "poisson":
        rng = np.random.default_rng(seed)
        gaps = rng.exponential(duration_s / calls, size=calls)
        return [float(x) for x in np.cumsum(gaps) - gaps[0]]
    raise ValueError(f"unknown arrival pattern {pattern!r}; choose from {', '.join(PATTERNS)}")
