"""The discrete-event fleet simulation.

Everything that decides where a call goes and how big the fleet is, is the production code:
each call attempt runs ``Dispatcher.start_call`` (``rank_nodes`` + the registry's atomic
``reserve``, then the worker hand-off) against a ``MemoryRegistry`` whose clock is the
simulation's, and the fleet is sized by ``autoscale`` exactly as ``GET /v1/fleet/autoscale``
sizes it. What is modelled: node boot time, each node's pre-forked agent pool
(``SimWorkerClient``), the caller's connect time once an agent takes the call (calibration),
session lengths, the page's 503 retries, and the Kubernetes HPA between policy and replicas.

Time only jumps from event to event; no registry method ever suspends, so one asyncio loop
runs the whole simulation without sleeping. Nodes do not heartbeat (the registry's TTL is
infinite): node failure is not simulated, and a heartbeat per node-second would dominate.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dragoman.fleet.autoscale import AutoscaleConfig, Decision, autoscale, choose_drain, serving
from dragoman.fleet.call_request import CallRequest
from dragoman.fleet.dispatcher import Dispatcher
from dragoman.fleet.errors import NoAgentAvailable
from dragoman.fleet.memory_registry import MemoryRegistry
from dragoman.fleet.registry import DRAINING, READY
from dragoman.sim import calibrate, traces
from dragoman.sim.hpa import Hpa, HpaBehavior
from dragoman.sim.node import GONE, SimNode, SimWorkerClient
from dragoman.sim.profiles import DEFAULT_PROFILE, KRW_PER_USD, PROFILES, MachineProfile
from dragoman.sim.traces import Sessions, Trace

HISTORY_S = 300  # arrival history handed to the policy
MAX_RETRY_WAIT_S = 5.0  # dragoman/web/call.js: the page caps a Retry-After wait at 5 s


@dataclass(frozen=True)
class SimParams:
    trace: str = "surge"
    profile: str = DEFAULT_PROFILE
    slots_per_node: int | None = None  # None: calibration, else the profile's
    idle_target: int | None = None  # pre-forked processes per node; None: every slot
    floor_slots: int = 4000  # the policy's buffer floor (Settings.warm_buffer_slots)
    headroom: float = 1.0
    node_ready_s: float | None = None  # what the policy assumes; None: the profile's mean
    interval_s: float = 15.0  # how often the policy's output is acted on (HPA sync)
    scaler: str = "hpa"  # hpa: through the deploy/k8s HPA behaviour; direct: as the policy says
    overflow: str = "wait"  # wait: the worker waits agent_wait_s for a forking process; retry: 503
    agent_wait_s: float = 2.0  # Settings.agent_wait_s
    retry_after_s: int = 2  # Settings.retry_after_s
    max_retries: int = 3  # dragoman/web/call.js MAX_BUSY_RETRIES
    min_nodes: int = 1
    max_nodes: int = 200  # Settings.max_nodes = maxReplicaCount
    krw_per_usd: float = KRW_PER_USD
    session_median_s: float = 180.0
    session_sigma: float = 1.0
    scale: float = 1.0  # multiplies a built-in trace's concurrency
    seed: int = 1
    calibrate: str | None = None  # a `dragoman bench` JSON file

    def machine(self) -> MachineProfile:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}: {', '.join(PROFILES)}")
        return PROFILES[self.profile]


class Simulation:
    def __init__(self, params: SimParams, trace: Trace, cal: calibrate.Calibration) -> None:
        self.p = params
        self.trace = trace
        self.cal = cal
        self.machine = params.machine()
        per_core = cal.calls_per_core
        self.slots = (
            params.slots_per_node
            or cal.slots_per_node
            or (round(per_core * self.machine.vcpus) if per_core else self.machine.slots)
        )
        lo, hi = self.machine.boot_s
        self.policy = AutoscaleConfig(
            slots_per_node=self.slots,
            buffer_floor_slots=params.floor_slots,
            node_ready_s=params.node_ready_s if params.node_ready_s is not None else (lo + hi) / 2,
            reaction_s=params.interval_s,
            min_nodes=params.min_nodes,
            max_nodes=params.max_nodes,
            headroom=params.headroom,
        )
        self.hpa = (
            Hpa(HpaBehavior(min_replicas=params.min_nodes, max_replicas=params.max_nodes))
            if params.scaler == "hpa"
            else None
        )
        self.rng = np.random.default_rng(params.seed + 1000)
        self.now = 0.0
        self.registry = MemoryRegistry(node_ttl_s=math.inf, clock=lambda: self.now)
        self.clients: dict[str, SimWorkerClient] = {}
        # Reservation TTL as Settings.reservation_ttl_s; the fake worker confirms at once.
        self.dispatcher = Dispatcher(
            self.registry, self.clients.__getitem__, 10.0, params.retry_after_s
        )
        self.nodes: dict[str, SimNode] = {}  # every node ever asked for
        self.live: dict[str, SimNode] = {}  # not removed yet (paid for)
        self.booting: dict[str, SimNode] = {}
        self._seq = 0
        self._events: list[tuple[float, int, int, Any]] = []
        n = trace.calls
        self.answer_s = cal.draw_connect(self.rng, n)
        self.connect_s = np.full(n, np.nan)
        self.held_s = np.zeros(n)  # slot held: placed → end
        self.tries = np.zeros(n, dtype=np.int32)
        self.forked_wait = np.zeros(n, dtype=bool)
        self.refused = np.zeros(n, dtype=bool)
        self.call_node: list[SimNode | None] = [None] * n
        end = trace.horizon_s + 2 * params.session_median_s
        self.arrivals_per_s = np.zeros(int(max(end, trace.arrivals.max(initial=0))) + 4000)
        self.active = 0
        self.retrying = 0
        self.decision: Decision | None = None
        self.samples: list[tuple[float, ...]] = []
        self.drained = 0
        self.cancelled = 0
        self.max_load_fraction = 0.0

    # --- events -------------------------------------------------------------------------
    _END, _READY, _RETRY, _TICK, _SAMPLE = range(5)

    def _push(self, t: float, kind: int, obj: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (float(t), self._seq, kind, obj))

    async def run(self, on_progress: Callable[[str], None] = print) -> float:
        """Simulate until the last call has ended; returns the end time."""
        initial = await self._decide()
        for _ in range(initial.desired_nodes):
            node = self._new_node(ready_after=0.0)
            await self._ready(node)
        self._push(self.p.interval_s, self._TICK)
        self._push(0.0, self._SAMPLE)
        arrivals = self.trace.arrivals
        i, n = 0, arrivals.size
        pending_calls = n
        next_report = 0.1
        horizon = max(self.trace.horizon_s, float(arrivals[-1]) if n else 0.0)
        sample_dt = max(1.0, horizon / 2000)
        while pending_calls or self.active:
            t_event = self._events[0][0] if self._events else math.inf
            if i < n and arrivals[i] <= t_event:
                self.now = float(arrivals[i])
                if await self._attempt(i):
                    pending_calls -= 1
                i += 1
            else:
                t, _, kind, obj = heapq.heappop(self._events)
                self.now = t
                if kind == self._END:
                    await self._end(obj)
                elif kind == self._READY:
                    await self._ready(obj)
                elif kind == self._RETRY:
                    self.retrying -= 1
                    if await self._attempt(obj):
                        pending_calls -= 1
                elif kind == self._TICK:
                    await self._tick()
                    self._push(t + self.p.interval_s, self._TICK)
                else:
                    self._sample()
                    self._push(t + sample_dt, self._SAMPLE)
            if horizon and self.now >= next_report * horizon and next_report <= 1.0:
                on_progress(self._progress())
                next_report += 0.1
        self._sample()
        return self.now

    def _progress(self) -> str:
        ready = sum(1 for nd in self.live.values() if nd.state == READY)
        return (
            f"  t={_clock(self.now)}  active {self.active}, retrying {self.retrying}, "
            f"nodes {ready} ready + {len(self.booting)} booting, "
            f"refused {int(self.refused.sum())}"
        )

    async def _attempt(self, i: int) -> bool:
        """One press (or retry) of Call; True once the call is placed or given up."""
        sec = int(self.now)
        self.arrivals_per_s[sec] += 1  # what the api's meter counts: every request
        self.tries[i] += 1
        try:
            result = await self.dispatcher.start_call(CallRequest(str(i), "", "offer", "ja", "en"))
        except NoAgentAvailable as e:
            if self.tries[i] > self.p.max_retries:
                self.refused[i] = True
                return True
            self.retrying += 1
            self._push(self.now + min(MAX_RETRY_WAIT_S, max(0.25, e.retry_after_s)), self._RETRY, i)
            return False
        node = self.nodes[result["node_id"]]
        wait = result["timings_ms"]["wait_agent"] / 1000
        self.forked_wait[i] = wait > 0
        setup = wait + float(self.answer_s[i])
        self.connect_s[i] = self.now - float(self.trace.arrivals[i]) + setup
        self.held_s[i] = setup + float(self.trace.durations[i])
        self.call_node[i] = node
        self.active += 1
        self.max_load_fraction = max(self.max_load_fraction, node.busy / node.capacity)
        self._push(self.now + self.held_s[i], self._END, i)
        return True

    async def _end(self, i: int) -> None:
        node = self.call_node[i]
        assert node is not None
        await self.registry.release(str(i))
        node.end(self.now)
        self.active -= 1
        if node.state == DRAINING and node.busy == 0:
            await self._remove(node)

    def _new_node(self, ready_after: float | None = None) -> SimNode:
        lo, hi = self.machine.boot_s
        boot = float(self.rng.uniform(lo, hi)) if ready_after is None else ready_after
        node = SimNode(
            node_id=f"n{len(self.nodes) + 1:05d}",
            capacity=self.slots,
            idle_target=self.p.idle_target or self.slots,
            refill_s=self.cal.refill_s,
            requested_at=self.now,
            ready_at=self.now + boot,
        )
        self.nodes[node.node_id] = self.live[node.node_id] = node
        wait = self.p.agent_wait_s if self.p.overflow == "wait" else 0.0
        self.clients[node.address] = SimWorkerClient(
            node, self.registry, lambda: self.now, wait, self.p.retry_after_s
        )
        return node

    async def _ready(self, node: SimNode) -> None:
        if node.state == GONE:  # its boot was cancelled
            return
        self.booting.pop(node.node_id, None)
        node.start(self.now)
        await self.registry.register(node.report())

    async def _remove(self, node: SimNode) -> None:
        node.state = GONE
        node.removed_at = self.now
        del self.live[node.node_id]
        await self.registry.remove_node(node.node_id)

    async def _decide(self) -> Decision:
        infos = await self.registry.nodes()
        sec = int(self.now)
        history = self.arrivals_per_s[max(0, sec - HISTORY_S) : sec].tolist()
        active = sum(n.load for n in infos)
        return autoscale(infos, history, active, self.policy, booting=len(self.booting))

    async def _tick(self) -> None:
        d = self.decision = await self._decide()
        infos = await self.registry.nodes()
        current = len(serving(infos)) + len(self.booting)
        target = self.hpa.step(self.now, d.desired_nodes, current) if self.hpa else d.desired_nodes
        if target > current:
            for _ in range(target - current):
                node = self._new_node()
                self.booting[node.node_id] = node
                self._push(node.ready_at, self._READY, node)
            changed = target - current
        else:
            surplus = current - target
            cancel = min(len(self.booting), surplus)
            drain = d.drain if target == d.desired_nodes else choose_drain(infos, surplus - cancel)
            for node in sorted(self.booting.values(), key=lambda nd: -nd.requested_at)[:cancel]:
                del self.booting[node.node_id]
                await self._remove(node)
                self.cancelled += 1
            for node_id in drain:
                node = self.nodes[node_id]
                node.state = DRAINING
                await self.registry.heartbeat(node.report())
                self.drained += 1
                if node.busy == 0:
                    await self._remove(node)
            changed = -(cancel + len(drain))
        if self.hpa:
            self.hpa.applied(self.now, changed)

    def _sample(self) -> None:
        ready = [nd for nd in self.live.values() if nd.state == READY]
        paid = len(self.live)
        desired = self.decision.desired_nodes if self.decision else len(ready)
        self.samples.append(
            (
                self.now,
                self.active,
                self.retrying,
                len(ready) * self.slots,
                sum(nd.capacity - nd.busy for nd in ready),
                len(self.booting) * self.slots,
                paid,
                desired,
            )
        )


SAMPLE_FIELDS = (
    "t_s",
    "active_calls",
    "retrying_calls",
    "warm_slots",
    "free_warm_slots",
    "booting_slots",
    "paid_nodes",
    "desired_nodes",
)


def _clock(t: float) -> str:
    h, rem = divmod(int(t), 3600)
    return f"{h:02d}:{rem // 60:02d}:{rem % 60:02d}"


def simulate(
    params: SimParams, trace: Trace | None = None, on_progress: Callable[[str], None] = print
) -> tuple[Simulation, float, float]:
    """Run one simulation; returns it, its end time and its wall time."""
    sessions = Sessions(params.session_median_s, params.session_sigma)
    if trace is None:
        trace = traces.load(params.trace, sessions, params.seed, params.scale)
    cal = calibrate.load(Path(params.calibrate) if params.calibrate else None)
    sim = Simulation(params, trace, cal)
    t0 = time.perf_counter()
    end = asyncio.run(sim.run(on_progress))
    return sim, end, time.perf_counter() - t0
