"""The fleet registry's interface: which nodes exist, how loaded they are, which node hosts a call.

Two implementations share it: ``MemoryRegistry`` (one process, ``dragoman serve``) and
``RedisRegistry`` (several api replicas and workers). Callers rank nodes with
``dragoman.fleet.ranking`` and then ``reserve``; the reserve re-checks everything atomically,
so a stale ranking can cost a retry but never oversubscribe a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Raised by every registry; defined with the other errors that cross the api boundary.
from dragoman.contract.errors import RegistryUnavailable as RegistryUnavailable
from dragoman.fleet.limits import ConcurrencyRule, RateRule


@dataclass(frozen=True)
class NodeReport:
    """What a worker heartbeats."""

    node_id: str
    address: str  # internal URL of the worker, e.g. "http://10.0.0.2:8100"
    capacity: int  # call slots
    idle: int  # idle agent processes right now
    state: str  # a NodeState (a str: as stored and sent)
    # Local-pipeline calls share the node's one inference service: they need a media slot
    # AND one of these. (Default 0: a node made without them, as the simulator's, takes none.)
    local_capacity: int = 0
    local_load: int = 0  # local calls running, as the worker counts them (informational)
    # The calls the worker is running (and which of them are local): a registry that lost
    # its state (a Redis restart without persistence) takes them back from the next beat,
    # so it neither over-fills the node nor forgets where a call's control channel is.
    calls: tuple[str, ...] = ()
    local_calls: tuple[str, ...] = ()
    # (call id, concurrency-limit key, the hold's max age in s) for those calls: restored
    # with them, so the limits still count the calls that ran through the restart.
    holds: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True)
class NodeInfo:
    """What the registry knows about a node."""

    node_id: str
    address: str
    capacity: int
    idle: int
    state: str
    load: int  # live reservations + confirmed calls on the node
    heartbeat_age_s: float  # seconds since its last heartbeat, on the registry's own clock
    alive: bool  # heartbeat_age_s <= node_ttl_s
    local_capacity: int = 0  # local-pipeline call slots (within capacity)
    local_load: int = 0  # live local reservations + confirmed local calls on the node


@dataclass(frozen=True)
class Reservation:
    call_id: str
    node_id: str
    address: str


class Registry(Protocol):
    node_ttl_s: float

    async def register(self, report: NodeReport) -> None:
        """A worker (re)started: upsert the node and forget every call recorded for its id,
        because a restarted worker hosts none."""

    async def heartbeat(self, report: NodeReport) -> bool:
        """Upsert the node's fields and heartbeat time; its calls are kept. When the registry
        did not know the node any more (it lost its state), the report's calls are restored
        as confirmed (those released meanwhile excepted) and True is returned."""

    async def remove_node(self, node_id: str) -> None:
        """Forget the node and its calls."""

    async def nodes(self) -> list[NodeInfo]:
        """Every known node, alive or not, sorted by id; expired reservations are not counted."""

    async def node(self, node_id: str) -> NodeInfo | None: ...

    async def reserve(
        self, call_id: str, ranked: list[str], ttl_s: float, local: bool = False
    ) -> Reservation | None:
        """Atomically take a slot on the first node of ``ranked`` that is known, READY, alive and
        below capacity; a ``local`` call (the node's inference service) also needs the node
        below its ``local_capacity`` and takes a local slot too, freed with its call slot.
        The reservation lapses after ``ttl_s`` unless confirmed, so a caller that dies
        mid-handshake cannot leak a slot. None if no listed node has a slot right now.
        A call id holds at most one slot: reserving it again first frees what it held (so a
        retry, or a retry on another node after a failed hand-off, never takes two)."""

    async def confirm(self, call_id: str) -> bool:
        """Turn the reservation into a call that does not expire; False if it lapsed or is
        unknown."""

    async def release(self, call_id: str) -> None:
        """The call ended or its hand-off failed: free the slot. Idempotent."""

    async def lookup(self, call_id: str) -> str | None:
        """The node hosting this call (reserved or confirmed), so any api replica can end it."""

    async def ended_on(self, call_id: str) -> str | None:
        """The node a call released in the last 2 minutes was on: a page that reconnects
        after its call ended while it was away still reaches the node, which tells it why."""

    async def take_rate(self, rule: RateRule) -> float:
        """Count one request against ``rule`` (GCRA): 0 when allowed, else the seconds until
        one would be. Shared by every api replica using this registry."""

    async def hold(
        self, rule: ConcurrencyRule, call_id: str, max_age_s: float, pending_s: float
    ) -> bool:
        """Count ``call_id`` against ``rule`` if fewer than its limit are live (see
        ``limits.live_holds``: a hold lasts while the registry knows the call, so a call's
        end frees it without a separate release); False when the limit is reached."""

    async def unhold(self, key: str, call_id: str) -> None:
        """Stop counting a call that never started. Idempotent."""

    async def close(self) -> None: ...


def check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0:
        raise ValueError(f"reservation ttl must be positive, got {ttl_s!r}")
