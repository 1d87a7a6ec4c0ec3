"""In-process registry for ``dragoman serve``: one event loop, no external service.

Atomicity comes from the event loop itself: no method awaits between checking a node and
updating it, so concurrent reserves in the same loop cannot interleave mid-check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dragoman.fleet.limits import (
    ENDED,
    LIVE,
    UNKNOWN,
    ConcurrencyRule,
    RateRule,
    live_holds,
)
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.registry import NodeInfo, NodeReport, Reservation, check_ttl
from dragoman.rate import gcra

_ENDED_KEEP_S = 120.0  # how long a released call is remembered as ended
_MAX_RATE_KEYS = 100_000  # past this, keys whose window has passed are forgotten

_CONFIRMED = math.inf  # expiry of a confirmed call


@dataclass
class _Node:
    report: NodeReport
    heartbeat_at: float
    calls: dict[str, float] = field(default_factory=dict)  # call id -> expiry on the clock
    local: set[str] = field(default_factory=set)  # those of ``calls`` holding a local slot


class MemoryRegistry:
    def __init__(self, node_ttl_s: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.node_ttl_s = node_ttl_s
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self._calls: dict[str, str] = {}  # call id -> node id
        self._rates: dict[str, float] = {}  # limit key -> GCRA theoretical arrival time
        self._holds: dict[str, dict[str, float]] = {}  # limit key -> call id -> admitted at
        self._ended: dict[str, float] = {}  # call id -> released at (for the limits)
        self._ended_on: dict[str, str] = {}  # call id -> its node, while in _ended

    async def register(self, report: NodeReport) -> None:
        await self.remove_node(report.node_id)
        self._nodes[report.node_id] = _Node(report, self._clock())

    async def heartbeat(self, report: NodeReport) -> bool:
        node = self._nodes.get(report.node_id)
        if node is None:
            self._nodes[report.node_id] = _Node(report, self._clock())
        else:
            node.report, node.heartbeat_at = report, self._clock()
        return False  # in this process: it cannot lose its state and keep the node running

    async def remove_node(self, node_id: str) -> None:
        node = self._nodes.pop(node_id, None)
        if node is not None:
            for call_id in node.calls:
                if self._calls.get(call_id) == node_id:
                    del self._calls[call_id]

    async def nodes(self) -> list[NodeInfo]:
        now = self._clock()
        return [self._info(self._nodes[i], now) for i in sorted(self._nodes)]

    async def node(self, node_id: str) -> NodeInfo | None:
        node = self._nodes.get(node_id)
        return None if node is None else self._info(node, self._clock())

    async def reserve(
        self, call_id: str, ranked: list[str], ttl_s: float, local: bool = False
    ) -> Reservation | None:
        check_ttl(ttl_s)
        now = self._clock()
        self._drop(call_id)
        self._ended.pop(call_id, None)
        self._ended_on.pop(call_id, None)
        for node_id in ranked:
            node = self._nodes.get(node_id)
            if node is None or node.report.state != NodeState.READY or not self._alive(node, now):
                continue
            self._purge(node, now)
            if len(node.calls) >= node.report.capacity:
                continue
            if local and len(node.local) >= node.report.local_capacity:
                continue
            node.calls[call_id] = now + ttl_s
            if local:
                node.local.add(call_id)
            self._calls[call_id] = node_id
            return Reservation(call_id, node_id, node.report.address)
        return None

    async def confirm(self, call_id: str) -> bool:
        node = self._live_node(call_id, self._clock())
        if node is None:
            self._drop(call_id)
            return False
        node.calls[call_id] = _CONFIRMED
        return True

    async def release(self, call_id: str) -> None:
        node_id = self._calls.get(call_id)
        self._drop(call_id)
        now = self._clock()
        self._ended[call_id] = now
        if node_id is not None:
            self._ended_on[call_id] = node_id
        if len(self._ended) > 10_000:  # only recent ends matter (holds' pending window)
            self._ended = {c: t for c, t in self._ended.items() if now - t < _ENDED_KEEP_S}
            self._ended_on = {c: n for c, n in self._ended_on.items() if c in self._ended}

    async def ended_on(self, call_id: str) -> str | None:
        at = self._ended.get(call_id)
        if at is None or self._clock() - at >= _ENDED_KEEP_S:
            return None
        return self._ended_on.get(call_id)

    async def lookup(self, call_id: str) -> str | None:
        node = self._live_node(call_id, self._clock())
        return None if node is None else node.report.node_id

    async def take_rate(self, rule: RateRule) -> float:
        now = self._clock()
        retry_after, tat = gcra(self._rates.get(rule.key), now, rule.limit, rule.window_s)
        self._rates[rule.key] = tat
        if len(self._rates) > _MAX_RATE_KEYS:
            self._rates = {k: t for k, t in self._rates.items() if t > now}
        return retry_after

    async def hold(
        self, rule: ConcurrencyRule, call_id: str, max_age_s: float, pending_s: float
    ) -> bool:
        now = self._clock()
        holds = self._holds.get(rule.key, {})
        status = {c: self._call_status(c, now) for c in holds}
        holds = live_holds(holds, now, status, max_age_s, pending_s)
        if len(holds) >= rule.limit:
            self._holds[rule.key] = holds
            return False
        holds[call_id] = now
        self._holds[rule.key] = holds
        if len(self._holds) > _MAX_RATE_KEYS:
            recent = {k: h for k, h in self._holds.items() if max(h.values()) >= now - max_age_s}
            self._holds = recent
        return True

    async def unhold(self, key: str, call_id: str) -> None:
        holds = self._holds.get(key)
        if holds is not None:
            holds.pop(call_id, None)
            if not holds:
                del self._holds[key]

    def _call_status(self, call_id: str, now: float) -> str:
        if call_id in self._ended:
            return ENDED
        node = self._live_node(call_id, now)
        if node is not None:
            return LIVE if self._alive(node, now) else ENDED
        return UNKNOWN

    async def close(self) -> None:
        pass

    def _drop(self, call_id: str) -> None:
        node_id = self._calls.pop(call_id, None)
        node = self._nodes.get(node_id) if node_id is not None else None
        if node is not None:
            node.calls.pop(call_id, None)
            node.local.discard(call_id)

    def _live_node(self, call_id: str, now: float) -> _Node | None:
        """The node holding ``call_id`` if its reservation has not lapsed."""
        node_id = self._calls.get(call_id)
        node = self._nodes.get(node_id) if node_id is not None else None
        if node is None or node.calls.get(call_id, now) <= now:
            return None
        return node

    def _alive(self, node: _Node, now: float) -> bool:
        return now - node.heartbeat_at <= self.node_ttl_s

    def _purge(self, node: _Node, now: float) -> None:
        expired = [c for c, expiry in node.calls.items() if expiry <= now]
        for call_id in expired:
            del node.calls[call_id]
            node.local.discard(call_id)
            if self._calls.get(call_id) == node.report.node_id:
                del self._calls[call_id]

    def _info(self, node: _Node, now: float) -> NodeInfo:
        self._purge(node, now)
        r = node.report
        age = now - node.heartbeat_at
        return NodeInfo(
            node_id=r.node_id,
            address=r.address,
            capacity=r.capacity,
            idle=r.idle,
            state=r.state,
            load=len(node.calls),
            heartbeat_age_s=age,
            alive=age <= self.node_ttl_s,
            local_capacity=r.local_capacity,
            local_load=len(node.local),
        )
