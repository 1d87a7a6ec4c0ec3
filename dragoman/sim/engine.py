"""The discrete-event fleet simulation.

Everything that decides where a call goes and how big the fleet is, is the production code:
each call attempt runs ``Dispatcher.start_call`` (``rank_nodes``' packing order + the
registry's atomic ``reserve``, then the worker hand-off) against a ``MemoryRegistry`` whose
clock is the simulation's, and the fleet is sized by ``autoscale`` exactly as
``GET /v1/fleet/autoscale`` sizes it. What is modelled: node boot time, each node's pre-forked
agent pool (``SimWorkerClient``), the caller's connect time once an agent takes the call
(calibrated from ``dragoman bench calibrate``: handshakes in flight on the node, its fill),
direct-mode overflow when no node takes the call, session lengths, the page's 503 retries,
the Kubernetes HPA between policy and replicas, and which pods a scale-down removes (the
ReplicaSet's choice: booting pods first, then the lowest ``pod-deletion-cost``, which each
worker keeps at its call count — so empty ones; a pod chosen with calls drains them for up
to the drain timeout, then cuts what is left).

Time only jumps from event to event; no registry method ever suspends, so one asyncio loop
runs the whole simulation without sleeping. Nodes do not heartbeat (the registry's TTL is
infinite): node failure is not simulated, and a heartbeat per node-second would dominate.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dragoman.config import Settings
from dragoman.contract.calls import CallRequest
from dragoman.contract.errors import NoAgentAvailable
from dragoman.fleet.autoscale import AutoscaleConfig, Decision, autoscale, serving
from dragoman.fleet.dispatcher import Dispatcher
from dragoman.fleet.memory_registry import MemoryRegistry
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.ranking import Packing
from dragoman.sim import calibrate, traces
from dragoman.sim.calibrate import (
    AGENT_CALLER_RTTS,
    AGENT_PROVIDER_RTTS,
    DIRECT_CALLER_RTTS,
    DIRECT_PROVIDER_RTTS,
)
from dragoman.sim.hpa import Hpa, HpaBehavior
from dragoman.sim.node import GONE, SimNode, SimWorkerClient
from dragoman.sim.profiles import DEFAULT_PROFILE, KRW_PER_USD, MachineProfile, resolve
from dragoman.sim.traces import Sessions, Trace

HISTORY_S = 300  # arrival history handed to the policy
MAX_RETRY_WAIT_S = 5.0  # dragoman/web/call.js: the page caps a Retry-After wait at 5 s
# The policy's floor, in call slots, when nothing else is said: with direct-mode overflow
# available (a provider key) and without. Chosen from `dragoman simulate --sweep` (README).
DEFAULT_FLOOR_DIRECT = 800  # 8 nodes: day 0.076 KRW/user-min, 0.6 % of its calls direct
DEFAULT_FLOOR = 4000  # 40 nodes: the smallest swept that keeps the surge's p99 under 2 s
# Self-hosted AI has no provider key, so no overflow: the floor must absorb the day trace's
# largest spike (+1,500 concurrent within 30 s) while new nodes boot. Not swept yet.
DEFAULT_FLOOR_LOCAL = 1500
# A direct-mode call when direct.json has no measurement: our api, mint and the provider's
# SDP answer on loopback (the round trips are added on top).
UNMEASURED_DIRECT_S = 0.3


def _setting(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class SimParams:
    trace: str = "surge"
    profile: str = DEFAULT_PROFILE
    direct: bool = True  # a provider key: a call no node takes is answered in direct mode
    # (a local-AI profile forces False: self-hosted means no provider key, and a hybrid's
    # overflow AI fee would sit outside its KRW per user-minute)
    slots_per_node: int | None = None  # None: calls per core (calibration) × vCPUs
    idle_target: int | None = None  # pre-forked processes per node; None: as a worker sizes it
    idle_memory_budget_mb: int = _setting("idle_memory_budget_mb")
    floor_slots: int | None = None  # the policy's floor; None: DEFAULT_FLOOR[_DIRECT]
    headroom: float = 1.0
    node_ready_s: float | None = None  # what the policy assumes; None: the profile's mean
    interval_s: float = 15.0  # how often the policy's output is acted on (HPA sync)
    scaler: str = "hpa"  # hpa: through the deploy/k8s HPA behaviour; direct: as the policy says
    scale_down: str = "cost"  # which pods go: cost (pod-deletion-cost = calls) | random
    drain_timeout_s: float = 600.0  # deploy/k8s DRAGOMAN_DRAIN_TIMEOUT_S
    no_idle: str = "wait"  # no idle agent: the worker waits agent_wait_s for one; retry: 503
    agent_wait_s: float = _setting("agent_wait_s")
    retry_after_s: int = _setting("retry_after_s")
    max_retries: int = 3  # dragoman/web/call.js MAX_BUSY_RETRIES
    pack_headroom: float = Packing().headroom
    pack_spread: int = Packing().spread
    min_nodes: int = 1
    max_nodes: int = 200  # Settings.max_nodes = maxReplicaCount
    caller_rtt_s: float = 0.05  # caller ↔ node region (assumed; loopback when measured)
    provider_rtt_s: float = 0.10  # node or caller ↔ the provider (assumed)
    krw_per_usd: float = KRW_PER_USD
    session_median_s: float = 180.0
    session_sigma: float = 1.0
    scale: float = 1.0  # multiplies a built-in trace's concurrency
    seed: int = 1
    calibrate: str | None = None  # a folder of `bench calibrate` (default) or one bench JSON
    uncalibrated: bool = False  # the old assumed constants instead of measurements
    local_per_vcpu: float | None = None  # local talkers per vCPU; None: the profile's

    def __post_init__(self) -> None:
        if self.machine().local is not None and self.direct:
            object.__setattr__(self, "direct", False)

    def machine(self) -> MachineProfile:
        return resolve(self.profile)

    @property
    def floor(self) -> int:
        if self.floor_slots is not None:
            return self.floor_slots
        if self.machine().local is not None:
            return DEFAULT_FLOOR_LOCAL
        return DEFAULT_FLOOR_DIRECT if self.direct else DEFAULT_FLOOR


class Simulation:
    def __init__(self, params: SimParams, trace: Trace, cal: calibrate.Calibration) -> None:
        self.p = params
        self.trace = trace
        self.cal = cal
        self.machine = params.machine()
        per_core = cal.calls_per_core
        self.media_slots = (
            params.slots_per_node
            or cal.slots_per_node
            or (round(per_core * self.machine.vcpus) if per_core else self.machine.slots)
        )
        # A local call is bound by Whisper, not by media: the node admits local calls only
        # up to its local capacity (the registry's reserve checks it; SimNode.report).
        local = self.machine.local
        self.local_capacity = (
            local.capacity(self.machine.vcpus, params.local_per_vcpu) if local else None
        )
        self.slots = min(self.media_slots, self.local_capacity or self.media_slots)
        idle_mb = cal.idle_agent_mb or _setting("idle_process_estimate_mb")
        self.idle_target = params.idle_target or max(
            1, min(self.slots, int(params.idle_memory_budget_mb // idle_mb))
        )
        lo, hi = self.machine.boot_s
        self.policy = AutoscaleConfig(
            slots_per_node=self.slots,
            buffer_floor_slots=DEFAULT_FLOOR if params.direct else params.floor,
            overflow_available=params.direct,
            overflow_floor_slots=params.floor if params.direct else None,
            node_ready_s=params.node_ready_s if params.node_ready_s is not None else (lo + hi) / 2,
            reaction_s=params.interval_s,
            min_nodes=params.min_nodes,
            max_nodes=params.max_nodes,
            headroom=params.headroom,
            local_slots_per_node=self.local_capacity or 0,
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
            self.registry,
            self.clients.__getitem__,
            10.0,
            params.retry_after_s,
            Packing(params.pack_headroom, params.pack_spread),
        )
        # What a loopback measurement lacks: a real caller's and provider's round trips.
        net = cal.calibrated
        # A local agent opens no provider session before its first audio.
        provider_rtts = AGENT_PROVIDER_RTTS if local is None else 0.0
        self.agent_extra_s = (
            AGENT_CALLER_RTTS * params.caller_rtt_s + provider_rtts * params.provider_rtt_s
            if net
            else 0.0
        )
        self.direct_extra_s = (
            DIRECT_CALLER_RTTS * params.caller_rtt_s + DIRECT_PROVIDER_RTTS * params.provider_rtt_s
        )
        self.nodes: dict[str, SimNode] = {}  # every node ever asked for
        self.live: dict[str, SimNode] = {}  # not removed yet (paid for)
        self.booting: dict[str, SimNode] = {}
        self._seq = 0
        self._events: list[tuple[float, int, int, Any]] = []
        n = trace.calls
        self.connect_s = np.full(n, np.nan)
        self.held_s = np.zeros(n)  # slot held: placed → end
        self.placed_at = np.zeros(n)
        self.setup_s = np.zeros(n)  # placed → connected (agent wait + connect)
        self.served_s = np.zeros(n)  # seconds on the call (the trace's, or less if cut)
        self.tries = np.zeros(n, dtype=np.int32)
        self.forked_wait = np.zeros(n, dtype=bool)
        self.refused = np.zeros(n, dtype=bool)
        self.direct = np.zeros(n, dtype=bool)
        self.cut = np.zeros(n, dtype=bool)  # ended by a scale-down's drain timeout
        self.handshakes = np.zeros(n, dtype=np.int16)  # k the call's connect was drawn at
        self.call_node: list[SimNode | None] = [None] * n
        end = trace.horizon_s + 2 * params.session_median_s
        self.arrivals_per_s = np.zeros(int(max(end, trace.arrivals.max(initial=0))) + 4000)
        self.active = 0
        self.direct_active = 0  # calls in direct mode right now
        self.retrying = 0
        self.decision: Decision | None = None
        self.samples: list[tuple[float, ...]] = []
        self.drained = 0
        self.drained_busy = 0  # chosen for removal while holding calls
        self.cancelled = 0
        self.max_load_fraction = 0.0

    # --- events -------------------------------------------------------------------------
    _END, _READY, _RETRY, _TICK, _SAMPLE, _DRAIN_END, _DIRECT_END = range(7)

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
        while pending_calls or self.active or self.direct_active:
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
                elif kind == self._DRAIN_END:
                    await self._drain_timeout(obj)
                elif kind == self._DIRECT_END:
                    self.direct_active -= 1
                else:
                    self._sample()
                    self._push(t + sample_dt, self._SAMPLE)
            if horizon and self.now >= next_report * horizon and next_report <= 1.0:
                on_progress(self._progress())
                next_report += 0.1
        self._sample()
        return self.now

    def _progress(self) -> str:
        ready = sum(1 for nd in self.live.values() if nd.state == NodeState.READY)
        return (
            f"  t={_clock(self.now)}  active {self.active}, direct {int(self.direct.sum())}, "
            f"retrying {self.retrying}, nodes {ready} ready + {len(self.booting)} booting, "
            f"refused {int(self.refused.sum())}"
        )

    async def _attempt(self, i: int) -> bool:
        """One press (or retry) of Call; True once the call is placed or given up."""
        sec = int(self.now)
        self.arrivals_per_s[sec] += 1  # what the api's meter counts: every request
        self.tries[i] += 1
        try:
            result = await self.dispatcher.start_call(
                CallRequest(call_id=str(i), sdp="", source="ja", target="en"),
                local=self.local_capacity is not None,
            )
        except NoAgentAvailable as e:
            if self.p.direct:  # dragoman/api/calls.py: a full fleet answers in direct mode
                self._direct(i)
                return True
            if self.tries[i] > self.p.max_retries:
                self.refused[i] = True
                return True
            self.retrying += 1
            self._push(self.now + min(MAX_RETRY_WAIT_S, max(0.25, e.retry_after_s)), self._RETRY, i)
            return False
        node = self.nodes[result.node_id]
        wait = result.timings_ms["wait_agent"] / 1000
        self.forked_wait[i] = wait > 0
        k = node.handshakes_at(self.now) + 1  # this one included
        fill = max(0, node.busy - k) / node.limit  # calls already up on the node
        measured = self.cal.draw_connect(self.rng, k, fill)
        node.handshake_until(self.now + wait + measured)
        self.handshakes[i] = min(k, np.iinfo(np.int16).max)
        setup = wait + measured + self.agent_extra_s
        self.connect_s[i] = self.now - float(self.trace.arrivals[i]) + setup
        self.placed_at[i], self.setup_s[i] = self.now, setup
        self.held_s[i] = setup + float(self.trace.durations[i])
        self.served_s[i] = float(self.trace.durations[i])
        self.call_node[i] = node
        node.calls.add(i)
        self.active += 1
        self.max_load_fraction = max(self.max_load_fraction, node.busy / node.limit)
        self._push(self.now + self.held_s[i], self._END, i)
        return True

    def _direct(self, i: int) -> None:
        """The caller talks to the provider itself for the whole call: no slot, no node."""
        fake = self.cal.draw_direct(self.rng)
        setup = (UNMEASURED_DIRECT_S if fake is None else fake) + self.direct_extra_s
        self.direct[i] = True
        self.connect_s[i] = self.now - float(self.trace.arrivals[i]) + setup
        self.served_s[i] = float(self.trace.durations[i])
        self.direct_active += 1
        self._push(self.now + setup + self.served_s[i], self._DIRECT_END)

    async def _end(self, i: int) -> None:
        node = self.call_node[i]
        if node is None or i not in node.calls:  # cut earlier by a drain timeout
            return
        await self._release(node, i)
        if node.state == NodeState.DRAINING and node.busy == 0:
            await self._remove(node)

    async def _release(self, node: SimNode, i: int) -> None:
        await self.registry.release(str(i))
        node.calls.discard(i)
        node.end(self.now)
        self.active -= 1

    async def _drain_timeout(self, node: SimNode) -> None:
        """The drain timeout of a pod removed with calls: what still runs is cut."""
        if node.state == GONE:
            return
        for i in sorted(node.calls):
            self.cut[i] = True
            self.held_s[i] = self.now - self.placed_at[i]
            self.served_s[i] = max(0.0, self.held_s[i] - self.setup_s[i])
            await self._release(node, i)
        await self._remove(node)

    def _new_node(self, ready_after: float | None = None) -> SimNode:
        lo, hi = self.machine.boot_s
        boot = float(self.rng.uniform(lo, hi)) if ready_after is None else ready_after
        node = SimNode(
            node_id=f"n{len(self.nodes) + 1:05d}",
            capacity=self.media_slots,
            local_capacity=self.local_capacity,
            idle_target=self.idle_target,
            refill=lambda: self.cal.draw_refill(self.rng),
            requested_at=self.now,
            ready_at=self.now + boot,
        )
        self.nodes[node.node_id] = self.live[node.node_id] = node
        wait = self.p.agent_wait_s if self.p.no_idle == "wait" else 0.0
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
        local = self.local_capacity is not None  # then every call is a local one
        return autoscale(
            infos,
            history,
            active,
            self.policy,
            booting=len(self.booting),
            local_active=sum(n.local_load for n in infos) if local else 0,
            local_arrivals_per_s=history if local else (),
        )

    def _victims(self, count: int) -> list[SimNode]:
        """The READY pods a ReplicaSet removes when scaled down by ``count`` (after the
        booting ones): lowest pod-deletion-cost first — each worker keeps it at its call
        count — and among equals the most recently ready; or any, without the cost."""
        ready = [nd for nd in self.live.values() if nd.state == NodeState.READY]
        if self.p.scale_down == "random":
            order = self.rng.permutation(len(ready))
            return [ready[j] for j in order[:count]]
        ready.sort(key=lambda nd: (nd.busy, -nd.ready_at, nd.node_id))
        return ready[:count]

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
            for node in sorted(self.booting.values(), key=lambda nd: -nd.requested_at)[:cancel]:
                del self.booting[node.node_id]
                await self._remove(node)
                self.cancelled += 1
            victims = self._victims(surplus - cancel)
            for node in victims:
                node.state = NodeState.DRAINING
                await self.registry.heartbeat(node.report())
                self.drained += 1
                if node.busy == 0:
                    await self._remove(node)
                else:
                    self.drained_busy += 1
                    self._push(self.now + self.p.drain_timeout_s, self._DRAIN_END, node)
            changed = -(cancel + len(victims))
        if self.hpa:
            self.hpa.applied(self.now, changed)

    def _sample(self) -> None:
        ready = [nd for nd in self.live.values() if nd.state == NodeState.READY]
        paid = len(self.live)
        desired = self.decision.desired_nodes if self.decision else len(ready)
        self.samples.append(
            (
                self.now,
                self.active,
                self.retrying,
                len(ready) * self.slots,
                sum(nd.limit - nd.busy for nd in ready),
                len(self.booting) * self.slots,
                paid,
                desired,
                sum(1 for nd in ready if nd.busy == 0),
                self.direct_active,
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
    "empty_nodes",
    "direct_calls",
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
    cal = calibrate.load(
        Path(params.calibrate) if params.calibrate else None, uncalibrated=params.uncalibrated
    )
    sim = Simulation(params, trace, cal)
    t0 = time.perf_counter()
    # The dispatcher logs each failed hand-off (a worker with no agent ready): in a
    # simulation those are counted, not logged.
    api_log = logging.getLogger("dragoman.api")
    level = api_log.level
    api_log.setLevel(logging.ERROR)
    try:
        end = asyncio.run(sim.run(on_progress))
    finally:
        api_log.setLevel(level)
    return sim, end, time.perf_counter() - t0
