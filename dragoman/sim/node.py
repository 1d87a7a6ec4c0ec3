"""A simulated worker node and the ``WorkerClient`` the real ``Dispatcher`` talks to.

The node models what decides a caller's wait on a worker: its pre-forked agent pool. Like
``dragoman.worker.agents.pool``, it keeps ``min(idle_target, free slots)`` processes forked; a call
takes the oldest; a process that ends its call exits and a replacement is forked, ready a
measured refill time later (``refill()``). With no idle process, the worker waits up to
``agent_wait_s`` for one being forked, else answers 503 (and the dispatcher tries the next
node). It also tracks the handshakes it is doing at once, which the connect time depends on.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from dragoman.contract.calls import CallAnswer, CallRequest
from dragoman.contract.errors import NoAgentAvailable
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.registry import NodeReport, Registry

BOOTING = "BOOTING"
GONE = "GONE"


@dataclass(eq=False)
class SimNode:
    node_id: str
    capacity: int  # media slots
    idle_target: int
    refill: Callable[[], float]  # seconds from fork to a ready agent (a draw)
    requested_at: float  # cost runs from here…
    ready_at: float
    removed_at: float | None = None  # …to here (or the end of the simulation)
    local_capacity: int | None = None  # local-AI mode: Whisper-bound local calls
    state: str = BOOTING
    busy: int = 0
    max_busy: int = 0
    _procs: list[float] = field(default_factory=list)  # when each forked process is/was ready
    calls: set[int] = field(default_factory=set)  # the simulation's call indices
    _handshakes: list[float] = field(default_factory=list)  # when each one in flight ends

    @property
    def address(self) -> str:
        return f"sim://{self.node_id}"

    @property
    def limit(self) -> int:
        """Calls it admits: every simulated call is of the node's AI mode, so a local-AI node
        is full at its local capacity even with media slots left."""
        return min(self.capacity, self.local_capacity or self.capacity)

    def report(self) -> NodeReport:
        # ``idle`` is informational in the registry (ranking ignores it), so it is not kept
        # current; that would cost a heartbeat per call. A local-AI node reports its local
        # capacity, which the registry's reserve enforces for local calls; its call slots are
        # capped at it too, as deploy/k8s sizes DRAGOMAN_MAX_CALLS for the local pipeline, so
        # the policy's floor (in call slots) counts calls the node can actually take.
        state = NodeState.DRAINING if self.state == NodeState.DRAINING else NodeState.READY
        return NodeReport(
            self.node_id,
            self.address,
            self.limit,
            self.limit,
            state,
            local_capacity=self.local_capacity or 0,
        )

    def start(self, now: float) -> None:
        """Registered with its idle pool already forked (node ready time includes that)."""
        self.state = NodeState.READY
        self._procs = [now] * min(self.idle_target, self.limit)

    def take(self, now: float, wait_bound_s: float) -> float | None:
        """Seconds until an agent process is ready for a call, or None if over the bound."""
        if not self._procs or self.busy >= self.limit:
            return None
        wait = max(0.0, self._procs[0] - now)
        if wait > wait_bound_s:
            return None
        heapq.heappop(self._procs)
        self.busy += 1
        self.max_busy = max(self.max_busy, self.busy)
        self._top_up(now)
        return wait

    def end(self, now: float) -> None:
        self.busy -= 1
        self._top_up(now)

    def _top_up(self, now: float) -> None:
        if self.state != NodeState.READY:
            return
        want = min(self.idle_target, self.limit - self.busy) - len(self._procs)
        for _ in range(want):
            heapq.heappush(self._procs, now + self.refill())

    def handshakes_at(self, now: float) -> int:
        """Calls still being connected on this node."""
        while self._handshakes and self._handshakes[0] <= now:
            heapq.heappop(self._handshakes)
        return len(self._handshakes)

    def handshake_until(self, t: float) -> None:
        heapq.heappush(self._handshakes, t)

    def seconds(self, end: float) -> float:
        return (self.removed_at if self.removed_at is not None else end) - self.requested_at


class SimWorkerClient:
    """What ``HttpWorkerClient`` does against a real worker, answered by a ``SimNode``."""

    def __init__(
        self,
        node: SimNode,
        registry: Registry,
        clock: Callable[[], float],
        wait_bound_s: float,
        retry_after_s: int,
    ) -> None:
        self.node = node
        self._registry = registry
        self._clock = clock
        self._wait_bound = wait_bound_s
        self._retry_after = retry_after_s

    async def start_call(self, req: CallRequest) -> CallAnswer:
        if self.node.state != NodeState.READY:
            raise NoAgentAvailable("This node is draining.", self._retry_after)
        wait = self.node.take(self._clock(), self._wait_bound)
        if wait is None:
            raise NoAgentAvailable("No interpreter process is ready yet.", self._retry_after)
        await self._registry.confirm(req.call_id)  # the worker confirms once its agent answered
        return CallAnswer(sdp="", timings_ms={"wait_agent": wait * 1000})

    async def end_call(self, call_id: str, reason: str) -> bool:
        raise NotImplementedError("the simulator ends calls itself")
