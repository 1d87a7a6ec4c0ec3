"""In-process registry for ``dragoman serve``: one event loop, no external service.

Atomicity comes from the event loop itself: no method awaits between checking a node and
updating it, so concurrent reserves in the same loop cannot interleave mid-check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dragoman.fleet.registry import READY, NodeInfo, NodeReport, Reservation, check_ttl

_CONFIRMED = math.inf  # expiry of a confirmed call


@dataclass
class _Node:
    report: NodeReport
    heartbeat_at: float
    calls: dict[str, float] = field(default_factory=dict)  # call id -> expiry on the clock


class MemoryRegistry:
    def __init__(self, node_ttl_s: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.node_ttl_s = node_ttl_s
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self._calls: dict[str, str] = {}  # call id -> node id

    async def register(self, report: NodeReport) -> None:
        await self.remove_node(report.node_id)
        self._nodes[report.node_id] = _Node(report, self._clock())

    async def heartbeat(self, report: NodeReport) -> None:
        node = self._nodes.get(report.node_id)
        if node is None:
            self._nodes[report.node_id] = _Node(report, self._clock())
        else:
            node.report, node.heartbeat_at = report, self._clock()

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

    async def reserve(self, call_id: str, ranked: list[str], ttl_s: float) -> Reservation | None:
        check_ttl(ttl_s)
        now = self._clock()
        self._drop(call_id)
        for node_id in ranked:
            node = self._nodes.get(node_id)
            if node is None or node.report.state != READY or not self._alive(node, now):
                continue
            self._purge(node, now)
            if len(node.calls) < node.report.capacity:
                node.calls[call_id] = now + ttl_s
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
        self._drop(call_id)

    async def lookup(self, call_id: str) -> str | None:
        node = self._live_node(call_id, self._clock())
        return None if node is None else node.report.node_id

    async def close(self) -> None:
        pass

    def _drop(self, call_id: str) -> None:
        node_id = self._calls.pop(call_id, None)
        node = self._nodes.get(node_id) if node_id is not None else None
        if node is not None:
            node.calls.pop(call_id, None)

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
            if self._calls.get(call_id) == node.report.node_id:
                del self._calls[call_id]

    def _info(self, node: _Node, now: float) -> NodeInfo:
        self._purge(node, now)
        r = node.report
        age = now - node.heartbeat_at
        return NodeInfo(
            node_id=r.node_id,
            address=r.address,
            media_address=r.media_address,
            capacity=r.capacity,
            idle=r.idle,
            state=r.state,
            load=len(node.calls),
            heartbeat_age_s=age,
            alive=age <= self.node_ttl_s,
        )
