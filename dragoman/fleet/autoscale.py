"""How many worker nodes the fleet wants, and which to drain (pure policy over plain data).

The api's ``/v1/fleet/autoscale`` endpoint (read by KEDA) and ``dragoman simulate`` call the
same ``autoscale`` function, so the simulated fleet is sized exactly as the real one.

Sizing: capacity must hold the running calls plus a warm buffer of free slots. The buffer
covers the calls that will arrive before a node asked for now can take any (``lead_s``:
reaction time + node ready time), extrapolated with their recent trend so a rising trace is
met before its capacity runs out; and it is never smaller than a floor, which is what absorbs
a jump no history foresees (from idle to thousands). The floor and the rate-based part are
not added: each covers the same next ``lead_s`` seconds. Departures during the lead time are
deliberately not subtracted: that surplus is a margin that grows with the traffic.

Where direct-mode overflow is available (a provider key: a call that finds no slot is
answered with a provider session instead of 503), a jump is carried by the provider until
new nodes are ready, so the floor can be much smaller (``overflow_floor_slots``): the AI fee
per minute is the same either way, and it is outside the server budget.

Local-pipeline calls also need a slot on a node's inference service, of which a node has
fewer (``local_slots_per_node``): they are sized the same way from their own arrivals, and
the fleet wants the larger of the two node counts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dragoman.fleet.node_state import NodeState


class NodeView(Protocol):
    """What the policy reads of a node; ``registry.NodeInfo`` has it."""

    @property
    def node_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def load(self) -> int: ...
    @property
    def alive(self) -> bool: ...


@dataclass(frozen=True)
class AutoscaleConfig:
    slots_per_node: int
    buffer_floor_slots: int  # the smallest warm buffer, whatever the history says
    node_ready_s: float = 40.0  # a node asked for now takes calls after this long
    reaction_s: float = 15.0  # until the request is acted on (HPA sync period)
    min_nodes: int = 1
    max_nodes: int = 200
    headroom: float = 1.0  # multiplies the expected arrivals during the lead time
    overflow_available: bool = False  # a full fleet answers in direct mode (not 503)
    overflow_floor_slots: int | None = None  # the floor then; None: buffer_floor_slots
    short_window_s: int = 10  # "the rate now": mean over this many seconds
    trend_window_s: int = 60  # least-squares slope of the rate over this many seconds
    hold_s: int = 120  # the highest 10-s rate seen this recently is not forgotten
    local_slots_per_node: int = 0  # local-pipeline slots a node has; 0: not sized apart

    @property
    def lead_s(self) -> float:
        return self.reaction_s + self.node_ready_s

    @property
    def floor_slots(self) -> int:
        """The floor in effect: the lower one when direct-mode overflow is available."""
        if self.overflow_available and self.overflow_floor_slots is not None:
            return self.overflow_floor_slots
        return self.buffer_floor_slots

    @classmethod
    def from_settings(cls, settings: Any, overflow_available: bool) -> AutoscaleConfig:
        """The policy as ``dragoman.config.Settings`` configures it (``overflow_available``:
        ``pipeline.providers.catalog.direct_overflow_enabled(settings)``)."""
        return cls(
            slots_per_node=settings.max_calls,
            buffer_floor_slots=settings.warm_buffer_slots,
            node_ready_s=settings.autoscale_node_ready_s,
            reaction_s=settings.autoscale_reaction_s,
            min_nodes=settings.autoscale_min_nodes,
            max_nodes=settings.max_nodes,
            headroom=settings.autoscale_headroom,
            overflow_available=overflow_available,
            overflow_floor_slots=settings.warm_buffer_overflow_slots,
        )


@dataclass(frozen=True)
class Decision:
    desired_nodes: int  # READY + booting nodes wanted (what KEDA turns into replicas)
    need_slots: int  # active calls + max(floor, expected arrivals during the lead time)
    expected_arrivals: float  # calls expected before a node asked for now is ready
    rate_per_s: float  # the arrival rate the buffer was sized on
    cancel_booting: int  # booting nodes no longer wanted (they are dropped first)
    drain: tuple[str, ...]  # READY nodes to drain now: empty ones only
    need_local_slots: int = 0  # local calls + the local arrivals expected in the lead time


def expected_arrivals(arrivals_per_s: Sequence[float], cfg: AutoscaleConfig) -> tuple[float, float]:
    """(calls expected during the lead time, the rate it used), from per-second counts.

    The rate now plus its trend, integrated over the lead time: ∫(r + s·t)dt = L·(r + s·L/2),
    where the mean of the last ``short_window_s`` seconds is the rate half that window ago.
    A recent peak is held for ``hold_s`` so one quiet second does not shrink the buffer.
    """
    h = list(arrivals_per_s)
    if not h:
        return 0.0, 0.0
    lead = cfg.lead_s
    short = h[-cfg.short_window_s :]
    slope = max(0.0, _slope(h[-cfg.trend_window_s :]))
    now_rate = sum(short) / len(short) + slope * len(short) / 2
    projected = now_rate + slope * lead / 2
    held = h[-cfg.hold_s :][::-1]  # newest first: 10-s buckets end at the newest second
    peak = max(sum(held[i : i + 10]) / len(held[i : i + 10]) for i in range(0, len(held), 10))
    rate = max(projected, peak)
    return cfg.headroom * rate * lead, rate


def _slope(ys: Sequence[float]) -> float:
    n = len(ys)
    if n < 3:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    num = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den


def serving(nodes: Sequence[NodeView]) -> list[NodeView]:
    """Nodes that take new calls."""
    return [n for n in nodes if n.state == NodeState.READY and n.alive]


def choose_drain(nodes: Sequence[NodeView], count: int) -> tuple[str, ...]:
    """Up to ``count`` READY nodes to drain: only empty ones, so no call is ever moved or cut.

    Highest id first among the empty: ranking breaks ties towards the lowest id, so those are
    the nodes least likely to receive the next call.
    """
    if count <= 0:
        return ()
    empty = [n for n in serving(nodes) if n.load == 0]
    empty.sort(key=lambda n: n.node_id, reverse=True)
    return tuple(n.node_id for n in empty[:count])


def autoscale(
    nodes: Sequence[NodeView],
    arrivals_per_s: Sequence[float],
    active_calls: int,
    cfg: AutoscaleConfig,
    booting: int = 0,
    local_active: int = 0,
    local_arrivals_per_s: Sequence[float] = (),
) -> Decision:
    """The fleet size to ask for now.

    ``nodes``: the registry snapshot; ``arrivals_per_s``: call requests per second, oldest
    first, the newest complete second last; ``active_calls``: calls holding a slot;
    ``booting``: nodes asked for that have not registered yet (0 when the platform tracks
    them itself, as Kubernetes does); ``local_active`` and ``local_arrivals_per_s``: the
    same for local-pipeline calls alone (already counted in the others).
    """
    expected, rate = expected_arrivals(arrivals_per_s, cfg)
    need = active_calls + max(cfg.floor_slots, math.ceil(expected))
    desired = math.ceil(need / max(1, cfg.slots_per_node))
    need_local = 0
    if cfg.local_slots_per_node > 0:
        # No floor of its own: the media floor already keeps whole nodes warm.
        need_local = local_active + math.ceil(expected_arrivals(local_arrivals_per_s, cfg)[0])
        desired = max(desired, math.ceil(need_local / cfg.local_slots_per_node))
    # Never fewer nodes than are carrying calls: a scale-down removes pods by their deletion
    # cost (calls), so with this it only ever removes empty ones — none is cut mid-call.
    carrying = sum(1 for n in serving(nodes) if n.load > 0)
    desired = max(cfg.min_nodes, min(cfg.max_nodes, max(desired, carrying)))
    surplus = len(serving(nodes)) + booting - desired
    cancel = min(booting, max(0, surplus))
    drain = choose_drain(nodes, surplus - cancel)
    return Decision(desired, need, round(expected, 2), round(rate, 3), cancel, drain, need_local)


class ArrivalMeter:
    """Per-second counts of call requests over a sliding window, for the policy's rate input.

    Per replica: each api process counts only the requests it served. With R replicas behind
    a load balancer, multiply by R (``Settings.autoscale_api_replicas``); a fleet-wide count
    would need a shared counter in the registry.
    """

    def __init__(self, horizon_s: int = 300, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._counts: deque[float] = deque(maxlen=horizon_s)
        self._second: int | None = None  # the second the last element of _counts stands for

    def record(self, n: int = 1) -> None:
        """Count ``n`` requests arriving now."""
        self._advance(int(self._clock()))
        self._counts[-1] += n

    def _advance(self, sec: int) -> None:
        size = self._counts.maxlen or 0
        if self._second is None:
            self._second = sec - 1
        elif sec - self._second > size:  # silent longer than the window: all zeros
            self._second = sec - size
        while self._second < sec:
            self._counts.append(0.0)
            self._second += 1

    def history(self) -> list[float]:
        """Complete seconds only, oldest first (the current second is still filling)."""
        self._advance(int(self._clock()))
        return list(self._counts)[:-1]
