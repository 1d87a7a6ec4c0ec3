"""The autoscale policy (pure) and its api wiring: properties over random fleets and traces."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from dragoman.api.calls import fleet_summary
from dragoman.config import Settings
from dragoman.fleet.autoscale import (
    ArrivalMeter,
    AutoscaleConfig,
    autoscale,
    choose_drain,
    expected_arrivals,
)
from dragoman.fleet.memory_registry import MemoryRegistry
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.registry import NodeReport


@dataclass(frozen=True)
class Node:
    node_id: str
    state: str
    capacity: int
    load: int
    alive: bool = True


@st.composite
def fleets(draw: st.DrawFn) -> list[Node]:
    n = draw(st.integers(0, 30))
    out = []
    for i in range(n):
        cap = draw(st.integers(1, 100))
        out.append(
            Node(
                f"n{i:03d}",
                draw(
                    st.sampled_from(
                        [NodeState.READY, NodeState.READY, NodeState.READY, NodeState.DRAINING]
                    )
                ),
                cap,
                draw(st.integers(0, cap)),
                draw(st.booleans()) or draw(st.booleans()),  # mostly alive
            )
        )
    return out


configs = st.builds(
    AutoscaleConfig,
    slots_per_node=st.integers(1, 100),
    buffer_floor_slots=st.integers(0, 5000),
    node_ready_s=st.floats(0, 300),
    reaction_s=st.floats(0, 60),
    min_nodes=st.integers(0, 5),
    max_nodes=st.integers(5, 500),
    headroom=st.floats(0.5, 3),
)
histories = st.lists(st.floats(0, 500, allow_nan=False), max_size=400)


@settings(max_examples=300, deadline=None)
@given(fleets(), histories, configs, st.integers(0, 20), st.integers(0, 50_000))
def test_never_drains_a_node_with_calls(nodes, history, cfg, booting, extra_active) -> None:
    active = sum(n.load for n in nodes) + extra_active
    d = autoscale(nodes, history, active, cfg, booting=booting)
    by_id = {n.node_id: n for n in nodes}
    for node_id in d.drain:
        node = by_id[node_id]
        assert node.load == 0 and node.state == NodeState.READY and node.alive
    assert len(set(d.drain)) == len(d.drain)
    # Never shrinks below what it asks for: boots are cancelled first, then empty nodes go.
    serving = sum(1 for n in nodes if n.state == NodeState.READY and n.alive)
    assert 0 <= d.cancel_booting <= booting
    if d.drain or d.cancel_booting:
        assert serving + booting - d.cancel_booting - len(d.drain) >= d.desired_nodes


@settings(max_examples=300, deadline=None)
@given(fleets(), histories, configs, st.integers(0, 50_000))
def test_never_asks_for_fewer_slots_than_calls_plus_floor(nodes, history, cfg, active) -> None:
    d = autoscale(nodes, history, active, cfg)
    assert cfg.min_nodes <= d.desired_nodes <= max(cfg.min_nodes, cfg.max_nodes)
    if d.desired_nodes < cfg.max_nodes:  # the ceiling is the only thing that may cap it
        assert d.desired_nodes * cfg.slots_per_node >= active + cfg.buffer_floor_slots
        assert d.desired_nodes * cfg.slots_per_node >= d.need_slots
    assert d.need_slots >= active + cfg.buffer_floor_slots


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0, 50),
    accel=st.floats(0.01, 5),  # calls/s gained per second
    lead_ready=st.floats(5, 180),
    slots=st.integers(1, 100),
    elapsed=st.integers(30, 400),
)
def test_scales_up_before_capacity_runs_out_on_a_rising_trace(
    start, accel, lead_ready, slots, elapsed
) -> None:
    """Rate r(t) = start + accel·t, no call ends (the worst case): what the policy asks for at
    t must hold every call that has arrived by t + lead, when the nodes it asks for are ready.
    No floor, so the rate-based part alone has to do it."""
    cfg = AutoscaleConfig(
        slots_per_node=slots, buffer_floor_slots=0, node_ready_s=lead_ready, max_nodes=10**9
    )

    def arrived(t: float) -> float:  # ∫ r
        return start * t + accel * t * t / 2

    history = [arrived(k + 1) - arrived(k) for k in range(elapsed)]
    active = math.ceil(arrived(elapsed))
    d = autoscale([], history, active, cfg)
    demand_when_ready = arrived(elapsed + cfg.lead_s)
    assert d.desired_nodes * slots >= demand_when_ready - 1e-6 * demand_when_ready


def test_flat_history_buffers_rate_times_lead() -> None:
    cfg = AutoscaleConfig(slots_per_node=10, buffer_floor_slots=0, node_ready_s=45, reaction_s=15)
    expected, rate = expected_arrivals([2.0] * 120, cfg)
    assert rate == pytest.approx(2.0)
    assert expected == pytest.approx(120.0)  # 2 calls/s × (15 + 45) s
    d = autoscale([], [2.0] * 120, 30, cfg)
    assert d.need_slots == 150 and d.desired_nodes == 15


def test_floor_and_rate_buffer_cover_the_same_seconds() -> None:
    cfg = AutoscaleConfig(slots_per_node=10, buffer_floor_slots=100, node_ready_s=45)
    assert autoscale([], [1.0] * 60, 0, cfg).need_slots == 100  # 60 expected < floor
    assert autoscale([], [5.0] * 60, 0, cfg).need_slots == 300  # 300 expected > floor


def test_a_recent_peak_is_held() -> None:
    cfg = AutoscaleConfig(slots_per_node=10, buffer_floor_slots=0, node_ready_s=45, hold_s=120)
    burst_then_quiet = [0.0] * 100 + [50.0] * 10 + [0.0] * 60
    assert expected_arrivals(burst_then_quiet, cfg)[1] == pytest.approx(50.0)
    long_ago = [50.0] * 10 + [0.0] * 200
    assert expected_arrivals(long_ago, cfg)[1] == 0.0
    assert expected_arrivals([], cfg) == (0.0, 0.0)


def test_drain_takes_booting_first_then_empty_nodes_highest_id_first() -> None:
    cfg = AutoscaleConfig(slots_per_node=10, buffer_floor_slots=0, min_nodes=1)
    nodes = [
        Node("a", NodeState.READY, 10, 3),
        Node("b", NodeState.READY, 10, 0),
        Node("c", NodeState.READY, 10, 0),
        Node("d", NodeState.DRAINING, 10, 0),
        Node("e", NodeState.READY, 10, 0, alive=False),
    ]
    d = autoscale(nodes, [], 0, cfg, booting=1)
    assert d.desired_nodes == 1
    assert d.cancel_booting == 1
    assert d.drain == ("c", "b")  # "a" has calls: it stays although the fleet is too big
    assert choose_drain(nodes, 1) == ("c",)
    assert choose_drain(nodes, 0) == ()


def test_clamped_to_min_and_max_nodes() -> None:
    cfg = AutoscaleConfig(slots_per_node=10, buffer_floor_slots=0, min_nodes=2, max_nodes=5)
    assert autoscale([], [], 0, cfg).desired_nodes == 2
    assert autoscale([], [], 10_000, cfg).desired_nodes == 5


def test_arrival_meter_counts_per_second() -> None:
    now = [1000.2]
    meter = ArrivalMeter(horizon_s=30, clock=lambda: now[0])
    meter.record(3)
    now[0] = 1001.5
    meter.record()
    meter.record()
    now[0] = 1003.1
    # complete seconds only, oldest first; the current one (1003) is still filling
    assert meter.history() == [3, 2, 0]
    now[0] = 1100.0
    assert meter.history() == [0.0] * 29  # silent longer than the window


async def test_endpoint_reports_the_policy_and_sets_the_gauge() -> None:
    now = [0.0]
    registry = MemoryRegistry(node_ttl_s=3.0, clock=lambda: now[0])
    for i, load in enumerate([5, 0, 0]):
        await registry.register(NodeReport(f"n{i}", f"http://n{i}", 8, 8, NodeState.READY))
        for c in range(load):
            await registry.reserve(f"n{i}-c{c}", [f"n{i}"], 10.0)
    s = Settings(max_calls=8, warm_buffer_slots=8, autoscale_node_ready_s=30)
    request = SimpleNamespace(
        app=SimpleNamespace(
            state=SimpleNamespace(
                settings=s,
                dispatcher=SimpleNamespace(registry=registry),
                arrival_meter=ArrivalMeter(),
                local_arrival_meter=ArrivalMeter(),
            )
        )
    )
    body = await fleet_summary(request)
    assert body["fleet_active_calls"] == 5
    assert body["desired_nodes"] == 2  # ceil((5 + 8) / 8): no arrivals measured yet
    assert isinstance(body["desired_nodes"], int)
    assert body["autoscale"]["drain_candidates"] == ["n2"]
    assert REGISTRY.get_sample_value("dragoman_autoscale_desired_nodes") == 2


@settings(max_examples=300, deadline=None)
@given(fleets(), histories, configs, st.integers(0, 20))
@example(  # five calls on five nodes fit one: without the rule it would ask for one node
    [Node(f"n{i}", NodeState.READY, 100, 1) for i in range(5)]
    + [Node("n5", NodeState.READY, 100, 0)],
    [],
    AutoscaleConfig(slots_per_node=100, buffer_floor_slots=0),
    0,
)
@example(  # one node too many: the empty one goes, not the one with a call
    [Node("n0", NodeState.READY, 100, 0), Node("n1", NodeState.READY, 100, 1)],
    [],
    AutoscaleConfig(slots_per_node=100, buffer_floor_slots=0),
    0,
)
def test_never_asks_for_fewer_nodes_than_carry_calls(nodes, history, cfg, booting) -> None:
    """A scale-down removes the nodes the policy drains: it asks for at least the nodes that
    carry calls, and drains only empty ones, as many as the fleet is too big (where there
    are that many)."""
    active = sum(n.load for n in nodes)
    d = autoscale(nodes, history, active, cfg, booting=booting)
    serving = [n for n in nodes if n.state == NodeState.READY and n.alive]
    carrying = {n.node_id for n in serving if n.load > 0}
    empty = {n.node_id for n in serving if n.load == 0}
    assert d.desired_nodes >= min(len(carrying), cfg.max_nodes)
    # The drain choice: empty nodes only, never one that carries a call...
    assert set(d.drain) <= empty and not set(d.drain) & carrying
    # ...and as many as the fleet exceeds what it asks for (after cancelled boots), as far
    # as there are empty nodes: the carrying ones stay, whatever the surplus.
    surplus = len(serving) + booting - d.cancel_booting - d.desired_nodes
    assert len(d.drain) == min(len(empty), max(0, surplus))


def test_overflow_available_lowers_the_floor() -> None:
    base = AutoscaleConfig(slots_per_node=100, buffer_floor_slots=4000, overflow_floor_slots=200)
    assert base.floor_slots == 4000  # no provider key: overflow is not available
    assert autoscale([], [], 0, base).need_slots == 4000
    direct = AutoscaleConfig(
        slots_per_node=100, buffer_floor_slots=4000, overflow_floor_slots=200,
        overflow_available=True,
    )  # fmt: skip
    assert direct.floor_slots == 200
    d = autoscale([], [], 350, direct)
    assert d.need_slots == 550 and d.desired_nodes == 6
    # A recent rate still counts: the floor only bounds the buffer from below.
    assert autoscale([], [10.0] * 60, 0, direct).need_slots == 10 * 55
    # None: the same floor with or without overflow.
    same = AutoscaleConfig(slots_per_node=100, buffer_floor_slots=300, overflow_available=True)
    assert same.floor_slots == 300


def test_policy_from_settings() -> None:
    s = Settings(max_calls=120, warm_buffer_slots=4000, warm_buffer_overflow_slots=240)
    cfg = AutoscaleConfig.from_settings(s, overflow_available=True)
    assert (cfg.slots_per_node, cfg.floor_slots, cfg.max_nodes) == (120, 240, s.max_nodes)
    assert AutoscaleConfig.from_settings(s, overflow_available=False).floor_slots == 4000
    unset = Settings()  # no overflow floor set: the same floor either way
    assert AutoscaleConfig.from_settings(unset, True).floor_slots == unset.warm_buffer_slots


def test_idle_pool_is_sized_from_the_measured_idle_agent() -> None:
    import os

    from dragoman.worker.agents.pool import idle_target, idle_uss_mb

    s = Settings(max_calls=120, idle_memory_budget_mb=1024)
    assert idle_target(s) == 1024 // 60  # the conservative estimate until measured
    assert idle_target(s, measured_mb=17.3) == 59
    assert idle_target(s, measured_mb=5.0) == 120  # never more than the slots
    assert idle_target(Settings(max_calls=120, idle_target=7), measured_mb=5.0) == 7
    mine = idle_uss_mb([os.getpid()])
    assert mine is not None and mine > 1
    assert idle_uss_mb([]) is None


@settings(max_examples=300, deadline=None)
@given(
    fleets(),
    histories,
    histories,
    configs,
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(1, 100),
)
def test_local_calls_are_sized_against_local_capacity(
    nodes, history, local_history, cfg, active, local_active, local_per_node
) -> None:
    """Nodes for the local calls (and their expected arrivals) on each node's local slots,
    never fewer than the media need alone, and only the max of the two (no sum)."""
    local_cfg = dataclasses.replace(cfg, local_slots_per_node=local_per_node)
    active += local_active  # local calls hold media slots too
    media = autoscale(nodes, history, active, cfg)
    d = autoscale(
        nodes,
        history,
        active,
        local_cfg,
        local_active=local_active,
        local_arrivals_per_s=local_history,
    )
    expected_local, _ = expected_arrivals(local_history, cfg)
    assert d.need_local_slots == local_active + math.ceil(expected_local)
    assert d.need_slots == media.need_slots
    assert d.desired_nodes >= media.desired_nodes
    local_nodes = math.ceil(d.need_local_slots / local_per_node)
    if local_nodes <= cfg.max_nodes:
        assert d.desired_nodes * local_per_node >= d.need_local_slots
    want = max(media.desired_nodes, min(cfg.max_nodes, max(local_nodes, cfg.min_nodes)))
    assert d.desired_nodes == want
    # Not sized apart: exactly the media decision.
    assert autoscale(nodes, history, active, cfg, local_active=local_active) == media


def test_local_calls_ask_for_more_nodes_than_media_slots_would() -> None:
    """16 local calls on nodes of 8 call slots but 2 local slots each: 8 nodes, not 3."""
    cfg = AutoscaleConfig(slots_per_node=8, buffer_floor_slots=8, local_slots_per_node=2)
    nodes = [Node(f"n{i}", NodeState.READY, 8, 8) for i in range(2)]
    d = autoscale(nodes, [0.0] * 60, 16, cfg, local_active=16)
    assert d.need_slots == 24 and d.need_local_slots == 16
    assert d.desired_nodes == 8
