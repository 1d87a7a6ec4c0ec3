"""The Kubernetes HPA between the policy and the replica count, as configured in
``deploy/k8s/keda-scaledobject.yaml`` (AverageValue target 1, so the HPA's desired replicas
is the policy's ``desired_nodes``): 10 % tolerance, no scale-up stabilisation, scale up by
max(100 %, 50 pods) per 15 s, scale down on the highest recommendation of the last 10 min by
max(10 %, 1 pod) per minute. Keep the defaults equal to that file.

This is the platform's loop, not a second policy: it only delays and limits what the policy
asks for, which a fleet simulation must include to be honest about cost and surge latency.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HpaBehavior:
    tolerance: float = 0.1
    down_window_s: float = 600.0
    up_percent: float = 100.0
    up_pods: int = 50
    up_period_s: float = 15.0
    down_percent: float = 10.0
    down_pods: int = 1
    down_period_s: float = 60.0
    min_replicas: int = 1
    max_replicas: int = 200


class Hpa:
    def __init__(self, behavior: HpaBehavior) -> None:
        self.b = behavior
        self._recs: deque[tuple[float, int]] = deque()  # (time, recommendation)
        self._changes: deque[tuple[float, int]] = deque()  # (time, replicas added/removed)

    def step(self, now: float, desired: int, current: int) -> int:
        """Replicas to run now, given the metric's desired count and the current replicas."""
        b = self.b
        rec = desired
        if current > 0 and abs(desired / current - 1) <= b.tolerance:
            rec = current
        self._recs.append((now, rec))
        while self._recs and self._recs[0][0] < now - b.down_window_s:
            self._recs.popleft()
        keep = max(b.up_period_s, b.down_period_s)
        while self._changes and self._changes[0][0] <= now - keep:
            self._changes.popleft()
        # As the HPA stabilises: up to this recommendation, down only to the window's peak.
        target = max(current, rec)
        target = min(target, max(r for _, r in self._recs))
        if target > current:
            added = sum(d for t, d in self._changes if d > 0 and t > now - b.up_period_s)
            start = current - added
            cap = max(math.ceil(start * (1 + b.up_percent / 100)), start + b.up_pods)
            target = min(target, cap)
        elif target < current:
            removed = -sum(d for t, d in self._changes if d < 0 and t > now - b.down_period_s)
            start = current + removed
            floor = min(math.floor(start * (1 - b.down_percent / 100)), start - b.down_pods)
            target = max(target, floor)
        return max(b.min_replicas, min(b.max_replicas, target))

    def applied(self, now: float, delta: int) -> None:
        """What actually changed (a drain may do less than asked: only empty nodes go)."""
        if delta:
            self._changes.append((now, delta))
