"""Percentile summaries for benchmark reports."""

from __future__ import annotations

import numpy as np


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99, max and mean of ``values`` (None entries are failures)."""
    xs = np.array([v for v in values if v is not None], dtype=float)
    if xs.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    return {
        "count": int(xs.size),
        "p50": round(float(np.percentile(xs, 50)), 1),
        "p95": round(float(np.percentile(xs, 95)), 1),
        "p99": round(float(np.percentile(xs, 99)), 1),
        "max": round(float(xs.max()), 1),
        "mean": round(float(xs.mean()), 1),
    }
