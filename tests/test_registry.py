"""The fleet registry: one behaviour suite run on both the in-memory and the Redis registry
(a real ``redis-server``), the burst property, Redis outages, and the ranking policy."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis_server import RedisServer

from dragoman.bench.soak_observe import pooled_sockets
from dragoman.contract.calls import CallAnswer, CallRequest
from dragoman.contract.errors import NoAgentAvailable
from dragoman.fleet.dispatcher import Dispatcher
from dragoman.fleet.limits import ConcurrencyRule, RateRule
from dragoman.fleet.memory_registry import MemoryRegistry
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.ranking import Packing, free_local_slots, free_slots, rank_nodes
from dragoman.fleet.redis_registry import RedisRegistry
from dragoman.fleet.registry import NodeInfo, NodeReport, Registry, RegistryUnavailable, Reservation

# The Redis half starts a redis-server: end to end (tests/conftest.py).
BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.e2e)]
MakeRegistry = Callable[..., Registry]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def new_registry(
    backend: str, server: RedisServer | None, node_ttl_s: float = 3.0, prefix: str | None = None
) -> Registry:
    if backend == "memory":
        return MemoryRegistry(node_ttl_s=node_ttl_s)
    assert server is not None
    # A unique prefix gives each test a fresh registry in the shared server.
    prefix = prefix or f"test-{uuid.uuid4().hex}"
    return RedisRegistry(server.url, node_ttl_s=node_ttl_s, prefix=prefix)


@pytest.fixture(params=BACKENDS)
async def make_registry(request: pytest.FixtureRequest) -> AsyncIterator[MakeRegistry]:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    made: list[Registry] = []

    def make(node_ttl_s: float = 3.0) -> Registry:
        made.append(new_registry(request.param, server, node_ttl_s))
        return made[-1]

    yield make
    for registry in made:
        await registry.close()


@pytest.fixture
def registry(make_registry: MakeRegistry) -> Registry:
    return make_registry()


def report(
    node_id: str, capacity: int = 2, state: str = NodeState.READY, idle: int = 0
) -> NodeReport:
    return NodeReport(node_id, f"http://{node_id}:8100", capacity, idle, state)


async def load(registry: Registry, node_id: str) -> int:
    info = await registry.node(node_id)
    assert info is not None
    return info.load


# --- behaviour, on both registries -------------------------------------------------------------


async def test_register_heartbeat_nodes_round_trip(registry: Registry) -> None:
    await registry.register(report("b", capacity=4, idle=3))
    await registry.register(report("a", capacity=2))
    nodes = await registry.nodes()
    assert [n.node_id for n in nodes] == ["a", "b"]
    b = nodes[1]
    assert (b.address, b.capacity, b.idle, b.state, b.load) == (
        "http://b:8100",
        4,
        3,
        NodeState.READY,
        0,
    )
    assert b.alive and 0 <= b.heartbeat_age_s < 1

    await registry.heartbeat(report("b", capacity=5, idle=1, state=NodeState.DRAINING))
    b = await registry.node("b")
    assert b is not None and (b.capacity, b.idle, b.state) == (5, 1, NodeState.DRAINING)
    assert await registry.node("missing") is None

    await registry.heartbeat(report("c"))  # a heartbeat from an unknown node registers it
    await registry.remove_node("a")
    await registry.remove_node("a")
    assert [n.node_id for n in await registry.nodes()] == ["b", "c"]


async def test_reserve_takes_the_first_ranked_node_with_a_slot(registry: Registry) -> None:
    for node_id, capacity in [("a", 1), ("b", 2), ("c", 1)]:
        await registry.register(report(node_id, capacity))
    ranked = ["ghost", "a", "b", "c"]  # unknown ids are skipped
    got = [await registry.reserve(f"call-{i}", ranked, ttl_s=30) for i in range(5)]
    assert [r.node_id if r else None for r in got] == ["a", "b", "b", "c", None]
    assert got[0] is not None and got[0].address == "http://a:8100"
    assert got[0].call_id == "call-0"
    assert await registry.reserve("call-x", [], ttl_s=30) is None


async def test_reserving_the_same_call_again_moves_its_one_slot(registry: Registry) -> None:
    await registry.register(report("a", 2))
    await registry.register(report("b", 2))
    first = await registry.reserve("call", ["a"], ttl_s=30)
    assert first is not None and first.node_id == "a"
    assert await registry.reserve("call", ["a"], ttl_s=30) == first
    assert await load(registry, "a") == 1
    # A retry on another node (the hand-off to "a" failed and its release was lost).
    moved = await registry.reserve("call", ["b"], ttl_s=30)
    assert moved is not None and moved.node_id == "b"
    assert (await load(registry, "a"), await load(registry, "b")) == (0, 1)
    assert await registry.lookup("call") == "b"


async def test_reserve_never_uses_a_draining_node(registry: Registry) -> None:
    await registry.register(report("d", 5, state=NodeState.DRAINING))
    await registry.register(report("r", 1))
    res = await registry.reserve("call-1", ["d", "r"], ttl_s=30)
    assert res is not None and res.node_id == "r"
    assert await registry.reserve("call-2", ["d", "r"], ttl_s=30) is None
    # Draining keeps the calls already there.
    await registry.heartbeat(report("r", 1, state=NodeState.DRAINING))
    assert await load(registry, "r") == 1
    assert await registry.lookup("call-1") == "r"


async def test_reserve_never_uses_a_node_with_a_stale_heartbeat(
    make_registry: MakeRegistry,
) -> None:
    registry = make_registry(node_ttl_s=0.5)
    await registry.register(report("a"))
    await registry.register(report("b"))
    await asyncio.sleep(0.3)
    await registry.heartbeat(report("b"))
    await asyncio.sleep(0.3)  # a: 0.6 s since its heartbeat; b: 0.3 s
    alive = {n.node_id: n.alive for n in await registry.nodes()}
    assert alive == {"a": False, "b": True}
    a = await registry.node("a")
    assert a is not None and a.heartbeat_age_s > 0.5
    res = await registry.reserve("call-1", ["a", "b"], ttl_s=30)
    assert res is not None and res.node_id == "b"
    await registry.heartbeat(report("a"))  # a node that heartbeats again is usable again
    res = await registry.reserve("call-2", ["a", "b"], ttl_s=30)
    assert res is not None and res.node_id == "a"


async def test_an_unconfirmed_reservation_expires_and_frees_its_slot(registry: Registry) -> None:
    await registry.register(report("a", 1))
    assert await registry.reserve("call-1", ["a"], ttl_s=0.4) is not None
    assert await registry.reserve("call-2", ["a"], ttl_s=0.4) is None
    assert await registry.lookup("call-1") == "a"
    await asyncio.sleep(0.5)
    assert await registry.lookup("call-1") is None
    assert await load(registry, "a") == 0
    assert await registry.confirm("call-1") is False
    assert await registry.reserve("call-2", ["a"], ttl_s=0.4) is not None


async def test_a_confirmed_call_outlives_the_reservation_ttl(registry: Registry) -> None:
    await registry.register(report("a", 1))
    assert await registry.reserve("call-1", ["a"], ttl_s=0.4) is not None
    assert await registry.confirm("call-1") is True
    await asyncio.sleep(0.5)
    assert await registry.lookup("call-1") == "a"
    assert await load(registry, "a") == 1
    assert await registry.reserve("call-2", ["a"], ttl_s=30) is None
    assert await registry.confirm("call-1") is True  # confirming twice is harmless
    assert await registry.confirm("unknown") is False


async def test_release_frees_the_slot_and_is_idempotent(registry: Registry) -> None:
    await registry.register(report("a", 1))
    assert await registry.reserve("call-1", ["a"], ttl_s=30) is not None
    assert await registry.confirm("call-1")
    await registry.release("call-1")
    await registry.release("call-1")
    await registry.release("never-reserved")
    assert await load(registry, "a") == 0
    assert await registry.lookup("call-1") is None
    assert await registry.confirm("call-1") is False
    res = await registry.reserve("call-2", ["a"], ttl_s=30)
    assert res is not None and res.node_id == "a"
    await registry.release("call-2")  # a reservation can be released before it is confirmed
    assert await load(registry, "a") == 0


async def test_a_released_call_remembers_its_node_for_a_reconnecting_page(
    registry: Registry,
) -> None:
    await registry.register(report("a", 1))
    assert await registry.reserve("call-1", ["a"], ttl_s=30) is not None
    assert await registry.confirm("call-1")
    assert await registry.ended_on("call-1") is None  # still running: lookup's job
    await registry.release("call-1")
    await registry.release("call-1")  # a second release keeps what the first one knew
    assert await registry.lookup("call-1") is None
    assert await registry.ended_on("call-1") == "a"
    await registry.release("never-reserved")
    assert await registry.ended_on("never-reserved") is None
    assert await registry.ended_on("unknown") is None


async def test_lookup_finds_reserved_and_confirmed_calls(registry: Registry) -> None:
    await registry.register(report("a", 1))
    await registry.register(report("b", 1))
    await registry.reserve("reserved", ["a", "b"], ttl_s=30)
    await registry.reserve("confirmed", ["a", "b"], ttl_s=30)
    assert await registry.confirm("confirmed")
    assert await registry.lookup("reserved") == "a"
    assert await registry.lookup("confirmed") == "b"
    assert await registry.lookup("unknown") is None


async def test_registering_a_node_again_forgets_its_calls(registry: Registry) -> None:
    await registry.register(report("a", 2))
    await registry.register(report("b", 1))
    await registry.reserve("a-reserved", ["a"], ttl_s=30)
    await registry.reserve("a-confirmed", ["a"], ttl_s=30)
    await registry.confirm("a-confirmed")
    await registry.reserve("b-call", ["b"], ttl_s=30)

    await registry.register(report("a", 2))  # the worker restarted
    assert await load(registry, "a") == 0
    assert await registry.lookup("a-reserved") is None
    assert await registry.lookup("a-confirmed") is None
    assert await registry.lookup("b-call") == "b"
    assert await registry.reserve("new", ["a"], ttl_s=30) is not None


async def test_removing_a_node_forgets_its_calls(registry: Registry) -> None:
    await registry.register(report("a", 2))
    await registry.reserve("call", ["a"], ttl_s=30)
    await registry.remove_node("a")
    assert await registry.lookup("call") is None
    assert await registry.reserve("call-2", ["a"], ttl_s=30) is None


async def test_capacity_is_never_exceeded(registry: Registry) -> None:
    await registry.register(report("a", 3))
    granted = [await registry.reserve(f"call-{i}", ["a"], ttl_s=30) for i in range(5)]
    assert sum(r is not None for r in granted) == 3
    # A worker that lowers its capacity below its load keeps its calls but takes no more
    # until enough of them end.
    await registry.heartbeat(report("a", 1))
    assert await load(registry, "a") == 3
    await registry.release("call-0")
    assert await registry.reserve("more", ["a"], ttl_s=30) is None
    await registry.release("call-1")
    await registry.release("call-2")
    assert await registry.reserve("more", ["a"], ttl_s=30) is not None


async def test_reservation_ttl_must_be_positive(registry: Registry) -> None:
    await registry.register(report("a"))
    with pytest.raises(ValueError):
        await registry.reserve("call", ["a"], ttl_s=0)


# --- abuse limits kept in the registry (shared by api replicas), on both registries --------


async def test_rate_limit_allows_a_burst_then_one_per_interval(registry: Registry) -> None:
    rule = RateRule("calls:ip:203.0.113.1", limit=3, window_s=1.2)
    assert [await registry.take_rate(rule) for _ in range(3)] == [0, 0, 0]
    wait = await registry.take_rate(rule)
    assert 0.2 < wait <= 0.4  # the next one is due one interval (0.4 s) after the burst
    assert await registry.take_rate(RateRule("calls:ip:203.0.113.2", 3, 1.2)) == 0  # per key
    await asyncio.sleep(wait + 0.05)
    assert await registry.take_rate(rule) == 0
    assert await registry.take_rate(rule) > 0  # a refused request does not move the window


async def test_concurrency_holds_last_while_the_call_does(registry: Registry) -> None:
    await registry.register(report("a", capacity=4))
    rule = ConcurrencyRule("calls:sub:alice", limit=2)
    assert await registry.hold(rule, "c1", max_age_s=60, pending_s=0.3)
    assert await registry.hold(rule, "c2", max_age_s=60, pending_s=0.3)
    assert not await registry.hold(rule, "c3", max_age_s=60, pending_s=0.3)
    # c1 gets placed and runs; c2 never reaches the registry (its POST died mid-way).
    await registry.reserve("c1", ["a"], ttl_s=30)
    await registry.confirm("c1")
    await asyncio.sleep(0.4)  # past pending_s: only a call the registry knows still counts
    assert await registry.hold(rule, "c3", max_age_s=60, pending_s=0.3)
    assert not await registry.hold(rule, "c4", max_age_s=60, pending_s=0.3)
    # The call ends (the worker releases it): its hold goes with it, no api involved.
    await registry.release("c1")
    await registry.unhold(rule.key, "c3")  # c3 was refused elsewhere: given back at once
    assert await registry.hold(rule, "c5", max_age_s=60, pending_s=0.3)
    assert await registry.hold(rule, "c6", max_age_s=60, pending_s=0.3)
    assert not await registry.hold(rule, "c7", max_age_s=60, pending_s=0.3)


async def test_a_hold_on_a_vanished_node_frees_itself(make_registry: MakeRegistry) -> None:
    registry = make_registry(node_ttl_s=0.3)
    await registry.register(report("a", capacity=4))
    rule = ConcurrencyRule("calls:ip:203.0.113.9", limit=1)
    assert await registry.hold(rule, "c1", max_age_s=60, pending_s=0.1)
    await registry.reserve("c1", ["a"], ttl_s=30)
    await registry.confirm("c1")
    assert not await registry.hold(rule, "c2", max_age_s=60, pending_s=0.1)
    await asyncio.sleep(0.5)  # node "a" stops heartbeating: its calls are gone with it
    assert await registry.hold(rule, "c2", max_age_s=60, pending_s=0.1)


# --- memory registry on an injected clock -----------------------------------------------------


async def test_memory_registry_judges_time_by_its_clock() -> None:
    now = [100.0]
    registry = MemoryRegistry(node_ttl_s=3.0, clock=lambda: now[0])
    await registry.register(report("a", 2))
    await registry.reserve("call", ["a"], ttl_s=10)
    now[0] += 3.0
    info = await registry.node("a")
    assert info is not None and info.alive and info.heartbeat_age_s == 3.0 and info.load == 1
    now[0] += 0.5
    # Dead, not full: one of its two slots is free, and still no call goes there.
    info = await registry.node("a")
    assert info is not None and not info.alive and info.load < info.capacity
    assert await registry.reserve("other", ["a"], ttl_s=10) is None
    now[0] += 6.5  # the reservation made at 100 lapses at 110
    assert await registry.lookup("call") is None
    await registry.heartbeat(report("a", 2))
    assert await registry.reserve("other", ["a"], ttl_s=10) is not None


# --- the burst property -------------------------------------------------------------------------

TOTAL_SLOTS = 300
REQUESTS = 1000
BURST_NODE_TTL_S = 1.0  # generous: a loaded CI box must not let the live nodes die mid-test
DEAD = [report("dead-0", 50), report("dead-1", 7)]


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Capacities of 1-10 READY nodes summing to TOTAL_SLOTS, and of 0-2 DRAINING ones."""
    n = draw(st.integers(1, 10))
    cuts = sorted(draw(st.lists(st.integers(0, TOTAL_SLOTS), min_size=n - 1, max_size=n - 1)))
    ready = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, TOTAL_SLOTS], strict=True)]
    draining = draw(st.lists(st.integers(1, 50), max_size=2))
    return ready, draining


async def _burst(
    make: Callable[[], Registry], fleet: tuple[list[int], list[int]], seed: int
) -> None:
    rng = random.Random(seed)  # per-request choices; a seed keeps hypothesis's examples small
    registry = make()
    # Workers heartbeat on their own connection, as separate processes would.
    beater = make()
    tag = uuid.uuid4().hex[:6]  # node ids unique to this example
    ready = [report(f"ready-{tag}-{i}", c) for i, c in enumerate(fleet[0])]
    draining = [report(f"drain-{tag}-{i}", c, NodeState.DRAINING) for i, c in enumerate(fleet[1])]
    capacity = {r.node_id: r.capacity for r in ready}
    unusable = [r.node_id for r in draining + DEAD]
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            for r in ready + draining:
                await beater.heartbeat(r)
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                pass

    async def request(i: int, stale: list[NodeInfo]) -> Reservation | None:
        # Random interleaving: yield a few times, rank from a snapshot that may be stale (taken
        # before the burst, when every node was empty) and sometimes put unusable nodes first.
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        snapshot = await registry.nodes() if rng.random() < 0.2 else stale
        ranked = rank_nodes(snapshot)
        if rng.random() < 0.3:
            ranked = unusable + ranked
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        return await registry.reserve(f"call-{tag}-{i}", ranked, ttl_s=30)

    beat_task: asyncio.Task[None] | None = None
    try:
        for r in ready + draining:
            await registry.register(r)
        beat_task = asyncio.create_task(beat())
        stale = await registry.nodes()
        assert free_slots(stale) == TOTAL_SLOTS
        results = await asyncio.gather(*(request(i, stale) for i in range(REQUESTS)))

        granted = [r for r in results if r is not None]
        assert len(granted) == TOTAL_SLOTS
        assert len({r.call_id for r in granted}) == TOTAL_SLOTS
        per_node = Counter(r.node_id for r in granted)
        assert set(per_node) <= set(capacity)
        nodes = {n.node_id: n for n in await registry.nodes()}
        for node_id, cap in capacity.items():
            assert per_node[node_id] == nodes[node_id].load <= cap
        assert all(nodes[node_id].load == 0 for node_id in unusable)

        await asyncio.gather(*(registry.release(r.call_id) for r in granted))
        nodes_after = await registry.nodes()
        assert sum(n.load for n in nodes_after) == 0
        assert free_slots(nodes_after) == TOTAL_SLOTS
    finally:
        stop.set()  # before removing the nodes, or a last heartbeat would bring one back
        if beat_task is not None:
            await beat_task
        for r in ready + draining:
            await registry.remove_node(r.node_id)
        await registry.close()
        await beater.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_burst_never_oversubscribes_and_never_refuses_while_slots_exist(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("redis_server") if backend == "redis" else None
    # Dead nodes are shared by every example (only the READY/DRAINING ones are per example),
    # so the wait for their heartbeats to go stale is paid once.
    prefix = f"burst-{uuid.uuid4().hex}"
    memory = MemoryRegistry(node_ttl_s=BURST_NODE_TTL_S)

    def make() -> Registry:
        if backend == "memory":
            return memory
        return new_registry(backend, server, BURST_NODE_TTL_S, prefix)

    async def kill_nodes() -> None:
        registry = make()
        for r in DEAD:
            await registry.register(r)
        await asyncio.sleep(BURST_NODE_TTL_S + 0.05)
        assert not any(n.alive for n in await registry.nodes())
        await registry.close()

    asyncio.run(kill_nodes())

    # No shrink phase: each example takes about a second, so shrinking a failure would outlast
    # the test timeout; the failing fleet and seed are reported as drawn.
    @settings(
        max_examples=10 if backend == "memory" else 6,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(fleet=fleets(), seed=st.integers(0, 2**32))
    def burst(fleet: tuple[list[int], list[int]], seed: int) -> None:
        asyncio.run(_burst(make, fleet, seed))

    burst()


# --- Redis outages --------------------------------------------------------------------------------


async def _fails_fast(op: Callable[[], Awaitable[object]], within_s: float = 1.0) -> None:
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable):
        await op()
    assert time.monotonic() - start < within_s


@pytest.mark.e2e  # a redis-server
async def test_redis_down_is_unavailable_fast_and_the_registry_recovers_on_restart() -> None:
    with RedisServer() as server:
        registry = RedisRegistry(server.url, prefix="outage", op_timeout_s=0.5)
        try:
            await registry.register(report("a", 2))
            assert await registry.reserve("before", ["a"], ttl_s=30) is not None

            server.stop()
            await _fails_fast(lambda: registry.reserve("during", ["a"], ttl_s=30))
            await _fails_fast(registry.nodes)
            await _fails_fast(lambda: registry.heartbeat(report("a", 2)))
            await _fails_fast(lambda: registry.lookup("before"))

            server.start()  # same port, empty data, empty script cache
            await registry.register(report("a", 2))
            res = await registry.reserve("after", ["a"], ttl_s=30)
            assert res is not None and res.node_id == "a"
            assert await registry.confirm("after")
            assert await load(registry, "a") == 1
        finally:
            await registry.close()


@pytest.mark.e2e  # a redis-server
async def test_a_redis_that_restarted_empty_takes_the_running_calls_back_from_the_next_beat() -> (
    None
):
    # Found by `bench soak --fleet`: after a Redis restart (no persistence) the registry
    # counted 0 calls on nodes that were full, over-filled them (the worker refused with
    # "all interpreters are busy") and lost where each call's control channel was.
    with RedisServer() as server:
        registry = RedisRegistry(server.url, prefix="restart", op_timeout_s=0.5)
        try:
            node = NodeReport("a", "http://a:8100", 3, 0, NodeState.READY, local_capacity=3)
            await registry.register(node)
            for call in ("kept", "kept-local", "ended-meanwhile"):
                assert await registry.reserve(call, ["a"], ttl_s=30, local=call == "kept-local")
                assert await registry.confirm(call)
            server.stop()
            server.start()  # same port, empty data
            await registry.release("ended-meanwhile")  # released while the node was unknown
            running = ("kept", "kept-local", "ended-meanwhile")  # the worker's last view
            beat = dataclasses.replace(node, calls=running, local_calls=("kept-local",))
            assert await registry.heartbeat(beat) is True
            assert await load(registry, "a") == 2  # the released one stays released
            info = await registry.node("a")
            assert info is not None and info.local_load == 1
            assert await registry.lookup("kept") == "a"
            assert await registry.lookup("ended-meanwhile") is None
            # Known again: the next beat restores nothing (a call released now stays so).
            await registry.release("kept")
            assert await registry.heartbeat(beat) is False
            assert await load(registry, "a") == 1
        finally:
            await registry.close()


def _redis_sockets(server: RedisServer) -> int:
    """This process's TCP sockets to the server (closed-by-peer ones included)."""
    return pooled_sockets(os.getpid(), frozenset({server.port}))


@pytest.mark.e2e  # a redis-server
@pytest.mark.parametrize("outage_seen", [True, False])
async def test_a_redis_restart_leaves_no_dead_pooled_socket_open(outage_seen: bool) -> None:
    # Found by the 2-hour fleet soak: each Redis restart left 9-15 dead connections in a
    # worker's pool (their fds open for good: the pool reuses only the last few returned).
    with RedisServer() as server:
        registry = RedisRegistry(server.url, prefix="sockets", op_timeout_s=0.5)
        try:
            await registry.register(report("a", 2))
            await asyncio.gather(*(registry.nodes() for _ in range(12)))  # a burst: 12 sockets
            assert _redis_sockets(server) >= 8
            server.stop()
            if outage_seen:  # a heartbeat during the outage fails
                with pytest.raises(RegistryUnavailable):
                    await registry.heartbeat(report("a", 2))
            server.start()  # empty
            assert await registry.heartbeat(report("a", 2)) is True  # the node restored
            assert _redis_sockets(server) <= 2  # the one just used (a dead one is still listed)
        finally:
            await registry.close()


@pytest.mark.e2e  # a redis-server
async def test_a_redis_that_restarted_empty_takes_the_running_calls_holds_back() -> None:
    # Without them a restart lifted the concurrency limits off every running call: one
    # address at its limit could open as many more calls as it liked.
    rule = ConcurrencyRule("calls:ip:203.0.113.7", limit=2)
    with RedisServer() as server:
        registry = RedisRegistry(server.url, prefix="holds", op_timeout_s=0.5)
        try:
            node = NodeReport("a", "http://a:8100", 4, 0, NodeState.READY)
            await registry.register(node)
            for call in ("kept", "ended-meanwhile"):
                assert await registry.hold(rule, call, max_age_s=600, pending_s=10)
                assert await registry.reserve(call, ["a"], ttl_s=30)
                assert await registry.confirm(call)
            server.stop()
            server.start()  # same port, empty data
            await registry.release("ended-meanwhile")
            beat = dataclasses.replace(
                node,
                calls=("kept", "ended-meanwhile"),
                holds=(("kept", rule.key, 600.0), ("ended-meanwhile", rule.key, 600.0)),
            )
            assert await registry.heartbeat(beat) is True
            # "kept" counts again ("ended-meanwhile" does not): one more fits, not two.
            assert await registry.hold(rule, "second", 600, 10)
            assert not await registry.hold(rule, "third", 600, 10)
            # The restored key expires by itself (no hold outlives its max age) …
            ttl_ms = await registry._redis.pttl(f"holds:hold:{rule.key}")
            assert 0 < ttl_ms <= 600_000
            # … and the call's end frees its hold as before.
            await registry.release("kept")
            assert await registry.hold(rule, "third", 600, 10)
        finally:
            await registry.close()


@pytest.mark.e2e  # a redis-server
async def test_a_hung_redis_times_out_and_the_registry_recovers() -> None:
    with RedisServer() as server:
        registry = RedisRegistry(server.url, prefix="hang", op_timeout_s=0.3)
        try:
            await registry.register(report("a", 2))
            server.pause()  # connections are still accepted, nothing answers
            await _fails_fast(registry.nodes, within_s=0.8)
            await _fails_fast(lambda: registry.heartbeat(report("a", 2)), within_s=0.8)
            server.resume()
            await registry.heartbeat(report("a", 2))
            res = await registry.reserve("call", ["a"], ttl_s=30)
            assert res is not None and res.node_id == "a"
        finally:
            await registry.close()


# --- ranking policy (pure) ----------------------------------------------------------------------


def info(
    node_id: str, load: int, capacity: int = 4, state: str = NodeState.READY, alive: bool = True
) -> NodeInfo:
    age = 0.1 if alive else 10.0
    return NodeInfo(node_id, "", capacity, 0, state, load, age, alive)


def test_rank_nodes_packs_fullest_first_headroom_spill_then_full() -> None:
    nodes = [
        info("d", 10, capacity=10),  # full
        info("c", 2, capacity=10),  # 20 %
        info("b", 4, capacity=20),  # 20 %, more calls than c: b first
        info("a", 6, capacity=10),  # 60 %: the fullest with packing room
        info("e", 0, capacity=10),  # empty: packed last, so it can empty and be drained
        info("h", 9, capacity=10),  # in its headroom (10 %: the last slot)
        info("i", 8, capacity=8),  # full
        info("f", 9, capacity=8),  # over capacity (shrunk): full
        info("g", 0, capacity=0),  # no slots at all: full
    ]
    packing = Packing(headroom=0.1, spread=1)
    assert rank_nodes(nodes, "call", packing) == ["a", "b", "c", "e", "h", "d", "f", "g", "i"]


def test_rank_nodes_fills_headroom_least_loaded_once_every_node_is_packed() -> None:
    # Every node at its packing limit (capacity 10, headroom 20 %: 8 slots): the rest of
    # the calls spread over the headroom, least-loaded first.
    nodes = [info("a", 9, capacity=10), info("b", 8, capacity=10), info("c", 10, capacity=10)]
    assert rank_nodes(nodes, "x", Packing(headroom=0.2, spread=4)) == ["b", "a", "c"]


def test_rank_nodes_spreads_a_burst_over_the_fullest_few() -> None:
    nodes = [info(f"n{i}", load, capacity=100) for i, load in enumerate([50, 40, 30, 20, 0, 0])]
    packing = Packing(headroom=0.1, spread=3)
    leads = Counter(rank_nodes(nodes, f"call-{i}", packing)[0] for i in range(3000))
    # Only the three fullest nodes lead, in roughly equal shares; the rest stay in order.
    assert set(leads) == {"n0", "n1", "n2"}
    assert min(leads.values()) > 800
    ranked = rank_nodes(nodes, "call-7", packing)
    assert ranked[3:] == ["n3", "n4", "n5"] and sorted(ranked[:3]) == ["n0", "n1", "n2"]
    # Deterministic per call id, and without a key it is plain packing order.
    assert rank_nodes(nodes, "call-7", packing) == ranked
    assert rank_nodes(nodes, "", packing) == ["n0", "n1", "n2", "n3", "n4", "n5"]


def test_packing_empties_nodes_where_least_loaded_would_not() -> None:
    """Calls come and go on four nodes: packing leaves whole nodes empty (drainable), where
    least-loaded placement (all slots headroom, ``headroom=1``) keeps every node in use."""

    def run(packing: Packing) -> tuple[int, int]:
        """The same arrivals and departures placed by ``packing``: how many steps had at
        least two calls per node, and in how many of those a node was empty."""
        rng = random.Random(3)
        load = {f"n{i}": 0 for i in range(4)}
        calls: list[str] = []
        busy = busy_with_an_empty_node = 0
        for step in range(4000):
            if calls and (len(calls) > 60 or rng.random() < 0.5):
                load[calls.pop(rng.randrange(len(calls)))] -= 1
            else:
                snapshot = [info(n, c, capacity=40) for n, c in load.items()]
                node = rank_nodes(snapshot, f"c{step}", packing)[0]
                load[node] += 1
                calls.append(node)
            if len(calls) >= 2 * len(load):
                busy += 1
                busy_with_an_empty_node += any(c == 0 for c in load.values())
        return busy, busy_with_an_empty_node

    busy, packed_empty = run(Packing(headroom=0.1, spread=2))
    same_busy, spread_empty = run(Packing(headroom=1.0))
    assert busy == same_busy > 1000  # the same calls in both runs, often enough to judge
    assert packed_empty == busy  # packing: a node is always drainable
    assert spread_empty < busy // 100, spread_empty  # least-loaded: (almost) never


def test_rank_nodes_drops_draining_and_dead_nodes() -> None:
    nodes = [info("a", 0, state=NodeState.DRAINING), info("b", 0, alive=False), info("c", 3)]
    assert rank_nodes(nodes) == ["c"]
    assert rank_nodes([]) == []


def test_free_slots_counts_only_ready_alive_nodes() -> None:
    nodes = [
        info("a", 1),  # 3
        info("b", 9, capacity=8),  # over capacity: 0, not -1
        info("c", 0, state=NodeState.DRAINING),
        info("d", 0, alive=False),
        info("e", 0, capacity=2),  # 2
    ]
    assert free_slots(nodes) == 5


# --- dispatcher: a node that cannot take the call passes it on ------------------------------


class _Worker:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.calls: list[str] = []

    async def start_call(self, req: CallRequest) -> CallAnswer:
        if self.refuse:
            raise NoAgentAvailable("No interpreter process is ready yet.", 2)
        self.calls.append(req.call_id)
        return CallAnswer(sdp="")

    async def end_call(self, call_id: str, reason: str) -> bool:
        return False


async def test_dispatcher_tries_the_next_node_when_a_worker_cannot_take_the_call() -> None:
    registry = MemoryRegistry()
    workers = {"w-a": _Worker(refuse=True), "w-b": _Worker(refuse=False)}
    await registry.register(NodeReport("a", "w-a", 10, 0, NodeState.READY))
    await registry.register(NodeReport("b", "w-b", 10, 0, NodeState.READY))
    await registry.reserve("old", ["a"], ttl_s=30)  # "a" is the fuller: packing tries it first
    await registry.confirm("old")
    dispatcher = Dispatcher(registry, workers.__getitem__, 10.0, 2, Packing(spread=1))
    result = await dispatcher.start_call(
        CallRequest(call_id="new", sdp="", source="ja", target="en")
    )
    assert result.node_id == "b" and workers["w-b"].calls == ["new"]
    assert await registry.lookup("new") == "b"
    assert {n.node_id: n.load for n in await registry.nodes()} == {"a": 1, "b": 1}
    # Every node refusing: the caller gets the worker's 503 in the worker's words — not
    # "all interpreters are busy", which both nodes' free slots belie (bench soak judged
    # such refusals as "at capacity") — and no slot stays taken.
    workers["w-b"].refuse = True
    with pytest.raises(NoAgentAvailable, match="No interpreter process is ready yet"):
        await dispatcher.start_call(CallRequest(call_id="third", sdp="", source="ja", target="en"))
    assert await registry.lookup("third") is None


# --- local-pipeline slots: a local call also needs one of the node's inference slots -----------


def local_report(node_id: str, capacity: int, local_capacity: int) -> NodeReport:
    return NodeReport(
        node_id,
        f"http://{node_id}:8100",
        capacity,
        0,
        NodeState.READY,
        local_capacity,
        0,
    )


async def local_load(registry: Registry, node_id: str) -> tuple[int, int]:
    info = await registry.node(node_id)
    assert info is not None
    return info.load, info.local_load


async def test_a_node_at_local_capacity_refuses_a_local_call_but_takes_a_cloud_one(
    registry: Registry,
) -> None:
    await registry.register(local_report("a", capacity=3, local_capacity=1))
    info = await registry.node("a")
    assert info is not None and (info.local_capacity, info.local_load) == (1, 0)
    assert await registry.reserve("local-1", ["a"], ttl_s=30, local=True) is not None
    assert await local_load(registry, "a") == (1, 1)
    assert await registry.reserve("local-2", ["a"], ttl_s=30, local=True) is None
    assert await registry.reserve("cloud-1", ["a"], ttl_s=30) is not None
    assert await local_load(registry, "a") == (2, 1)
    # Confirmed, the local slot stays taken; released, it is free again (and the call slot).
    assert await registry.confirm("local-1")
    assert await registry.reserve("local-2", ["a"], ttl_s=30, local=True) is None
    await registry.release("local-1")
    assert await local_load(registry, "a") == (1, 0)
    assert await registry.reserve("local-2", ["a"], ttl_s=30, local=True) is not None
    # Call slots full: a local call is refused even with local slots to spare.
    await registry.heartbeat(local_report("a", capacity=2, local_capacity=5))
    assert await registry.reserve("local-3", ["a"], ttl_s=30, local=True) is None
    assert await local_load(registry, "a") == (2, 1)


async def test_local_capacity_zero_takes_no_local_call_and_local_goes_to_the_next_node(
    registry: Registry,
) -> None:
    await registry.register(local_report("a", capacity=4, local_capacity=0))
    await registry.register(local_report("b", capacity=4, local_capacity=1))
    res = await registry.reserve("local-1", ["a", "b"], ttl_s=30, local=True)
    assert res is not None and res.node_id == "b"
    assert await registry.reserve("local-2", ["a", "b"], ttl_s=30, local=True) is None
    res = await registry.reserve("cloud", ["a", "b"], ttl_s=30)
    assert res is not None and res.node_id == "a"


async def test_a_lapsed_or_moved_local_reservation_frees_its_local_slot(
    registry: Registry,
) -> None:
    await registry.register(local_report("a", capacity=4, local_capacity=1))
    assert await registry.reserve("local-1", ["a"], ttl_s=0.4, local=True) is not None
    await asyncio.sleep(0.5)
    assert await local_load(registry, "a") == (0, 0)
    assert await registry.reserve("local-2", ["a"], ttl_s=30, local=True) is not None
    # Reserving the same id again, as a cloud call, gives its local slot back.
    assert await registry.reserve("local-2", ["a"], ttl_s=30) is not None
    assert await local_load(registry, "a") == (1, 0)
    assert await registry.reserve("local-3", ["a"], ttl_s=30, local=True) is not None
    await registry.remove_node("a")  # forgets its calls, local ones included
    await registry.register(local_report("a", capacity=4, local_capacity=1))
    assert await local_load(registry, "a") == (0, 0)


async def _local_burst(
    make: Callable[[], Registry], fleet: list[tuple[int, int]], requests: int, seed: int
) -> None:
    """``requests`` local reservations at once against nodes of (capacity, local capacity):
    exactly the free local slots (each within its node's call slots) are granted."""
    rng = random.Random(seed)
    registry = make()
    tag = uuid.uuid4().hex[:6]
    reports = [local_report(f"local-{tag}-{i}", c, lc) for i, (c, lc) in enumerate(fleet)]
    limit = {r.node_id: min(r.capacity, r.local_capacity) for r in reports}
    free_local = sum(limit.values())

    async def request(i: int, stale: list[NodeInfo]) -> Reservation | None:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        # Sometimes rank as if it were a cloud call: reserve itself must refuse the nodes
        # without a free local slot.
        ranked = rank_nodes(stale, local=rng.random() < 0.7)
        return await registry.reserve(f"call-{tag}-{i}", ranked, ttl_s=30, local=True)

    try:
        for r in reports:
            await registry.register(r)
        stale = await registry.nodes()
        assert free_local_slots(stale) == free_local
        results = await asyncio.gather(*(request(i, stale) for i in range(requests)))
        granted = [r for r in results if r is not None]
        assert len(granted) == min(requests, free_local)
        per_node = Counter(r.node_id for r in granted)
        nodes = {n.node_id: n for n in await registry.nodes()}
        for node_id, most in limit.items():
            assert per_node[node_id] == nodes[node_id].local_load == nodes[node_id].load <= most
        # The call slots left still take cloud calls.
        cloud = free_slots(list(nodes.values()))
        assert cloud == sum(r.capacity for r in reports) - len(granted)
        await asyncio.gather(*(registry.release(r.call_id) for r in granted))
        assert all(n.local_load == 0 == n.load for n in await registry.nodes())
    finally:
        for r in reports:
            await registry.remove_node(r.node_id)
        await registry.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_burst_of_local_calls_takes_exactly_the_free_local_slots(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("redis_server") if backend == "redis" else None
    prefix = f"local-burst-{uuid.uuid4().hex}"
    memory = MemoryRegistry()

    def make() -> Registry:
        return memory if backend == "memory" else new_registry(backend, server, 3.0, prefix)

    @settings(
        max_examples=15 if backend == "memory" else 8,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        fleet=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=6),
        requests=st.integers(1, 200),
        seed=st.integers(0, 2**32),
    )
    def burst(fleet: list[tuple[int, int]], requests: int, seed: int) -> None:
        asyncio.run(_local_burst(make, fleet, requests, seed))

    burst()


def test_rank_nodes_for_a_local_call_keeps_only_nodes_with_a_free_local_slot() -> None:
    def node(node_id: str, load: int, local_capacity: int, local: int) -> NodeInfo:
        return NodeInfo(node_id, "", 10, 0, NodeState.READY, load, 0.1, True, local_capacity, local)

    nodes = [
        node("a", 8, 2, 2),  # the fullest, but its inference is full
        node("b", 5, 4, 1),
        node("c", 1, 0, 0),  # takes no local call at all
        node("d", 10, 4, 0),  # call slots full: last, as for any call
        node("e", 2, 3, 2),
    ]
    packing = Packing(headroom=0.1, spread=1)
    assert rank_nodes(nodes, "call", packing) == ["a", "b", "e", "c", "d"]
    assert rank_nodes(nodes, "call", packing, local=True) == ["b", "e", "d"]
    # b: 3 local (7 call slots), d: none (no call slot), e: 1.
    assert free_local_slots(nodes) == 4
    assert free_slots(nodes) == 2 + 5 + 9 + 0 + 8


async def test_dispatcher_refuses_a_local_call_in_its_own_words_when_only_inference_is_full() -> (
    None
):
    registry = MemoryRegistry()
    workers = {"w-a": _Worker(refuse=False)}
    await registry.register(NodeReport("a", "w-a", 3, 0, NodeState.READY, 1))
    dispatcher = Dispatcher(registry, workers.__getitem__, 10.0, 2)

    def req(call_id: str) -> CallRequest:
        return CallRequest(call_id=call_id, sdp="", source="ja", target="en")

    await dispatcher.start_call(req("local-1"), local=True)
    with pytest.raises(NoAgentAvailable) as e:
        await dispatcher.start_call(req("local-2"), local=True)
    assert e.value.code == "no_local_capacity" and e.value.retry_after_s == 2
    assert "Local interpretation is at capacity" in str(e.value)
    await dispatcher.start_call(req("cloud-1"))
    await dispatcher.start_call(req("cloud-2"))
    with pytest.raises(NoAgentAvailable) as e:  # every call slot taken: the usual answer
        await dispatcher.start_call(req("local-3"), local=True)
    assert e.value.code == "no_agent"
    assert {n.node_id: (n.load, n.local_load) for n in await registry.nodes()} == {"a": (3, 1)}
