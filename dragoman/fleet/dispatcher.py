"""Places a call on a node: rank nodes (pure policy), reserve a slot atomically in the
registry, hand the offer to that node's worker. The worker confirms the slot when its agent
has answered and releases it when the call ends; an unconfirmed reservation expires, so a
slot never leaks when an api replica, a worker or a browser dies mid-handshake."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from opentelemetry import trace

from dragoman import tracing
from dragoman.contract.calls import CallAnswer, CallRequest, InviteAnswer
from dragoman.contract.errors import (
    AgentFailed,
    CallRejected,
    NoAgentAvailable,
    RegistryUnavailable,
    UnknownCall,
)
from dragoman.contract.page import CLOSE_UNKNOWN_CALL
from dragoman.fleet.control_link import ControlLink, LinkClosed
from dragoman.fleet.ranking import (
    DEFAULT_PACKING,
    Packing,
    free_local_slots,
    free_slots,
    rank_nodes,
)
from dragoman.fleet.registry import NodeInfo, Registry, Reservation
from dragoman.fleet.worker_client import WorkerClient

log = logging.getLogger("dragoman.api")

CONTROL_LOOKUP_RETRY_S = 0.25
MAX_NODE_ATTEMPTS = 3  # a node that fails the hand-off is skipped for the next try
FLEET_FULL = "All interpreters are busy."
LOCAL_FULL = (
    "Local interpretation is at capacity: every server's speech recognition is busy with "
    "other calls. Try again in a moment."
)


class Dispatcher:
    """Places calls for the api: ranks the registry's live nodes, reserves a slot on the
    best one atomically, and hands the call to that node's worker (``WorkerClient``); when
    the hand-off fails it tries the next node, and when none has a slot it says so
    (``NoAgentAvailable``)."""

    def __init__(
        self,
        registry: Registry,
        client_for: Callable[[str], WorkerClient],
        reservation_ttl_s: float,
        retry_after_s: int,
        packing: Packing = DEFAULT_PACKING,
    ) -> None:
        self.registry = registry
        self.packing = packing
        self._client_for = client_for  # worker address → client
        self._ttl = reservation_ttl_s
        self._retry_after = retry_after_s
        # Called when a reservation did not land where the snapshot said (a metric in the api).
        self.on_conflict: Callable[[], None] = lambda: None

    async def _reserve(self, call_id: str, exclude: set[str], local: bool) -> Reservation:
        nodes = [n for n in await self.registry.nodes() if n.node_id not in exclude]
        ranked = rank_nodes(nodes, call_id, self.packing, local)
        res = await self.registry.reserve(call_id, ranked, self._ttl, local)
        free = free_local_slots(nodes) if local else free_slots(nodes)
        missed = res is None or (ranked and res.node_id != ranked[0])
        if missed and free > 0:
            # Another request took the slot our snapshot saw; the atomic reserve moved on.
            self.on_conflict()
        if res is None:
            if local and free_slots(nodes) > 0:  # call slots are free: only inference is full
                raise NoAgentAvailable(LOCAL_FULL, self._retry_after, "no_local_capacity")
            raise NoAgentAvailable(FLEET_FULL, self._retry_after)
        return res

    async def _reserve_next_to_host(self, req: CallRequest, local: bool) -> Reservation:
        """A room guest goes where its host is: the slot its invitation reserved there (or,
        if that lapsed, a free one on the host's node) — never another node, since the two
        agents hand each other audio locally."""
        assert req.room_host is not None
        node_id = await self.registry.lookup(req.call_id) or await self.registry.lookup(
            req.room_host
        )
        if node_id is None:
            raise CallRejected("room_ended", "The person who invited you has left the call.")
        res = await self.registry.reserve(req.call_id, [node_id], self._ttl, local)
        if res is None:
            raise NoAgentAvailable(
                "The room's server is full right now; try again in a moment.", self._retry_after
            )
        return res

    async def start_call(self, req: CallRequest, local: bool = False) -> CallAnswer:
        """``local``: the call runs on the node's inference service (provider ``local``), so
        it also needs a free local slot there."""
        t0 = time.perf_counter()
        if req.room_host is not None:
            with _span("registry.reserve", req):
                res = await self._reserve_next_to_host(req, local)
            try:
                result = await self._hand_off(res, req)
            except Exception:
                await self._release_quietly(req.call_id)
                raise
            return result.model_copy(update={"node_id": res.node_id})
        tried: set[str] = set()
        last_error: Exception | None = None
        for _ in range(MAX_NODE_ATTEMPTS):
            with _span("registry.reserve", req):
                try:
                    res = await self._reserve(req.call_id, tried, local)
                except NoAgentAvailable:
                    if last_error is None:
                        raise
                    # No other node has a slot: the caller hears why the nodes that had
                    # one could not take the call, not that every slot is taken.
                    raise last_error from None
            t_reserved = time.perf_counter()
            try:
                result = await self._hand_off(res, req)
            except (AgentFailed, NoAgentAvailable) as e:
                # The worker frees its own reservations; a dead one's expire. Release anyway
                # so the slot is back at once, then try another node.
                log.warning("hand-off of %s to %s failed: %s", req.call_id, res.node_id, e)
                await self._release_quietly(req.call_id)
                tried.add(res.node_id)
                last_error = e
                continue
            except Exception:
                await self._release_quietly(req.call_id)
                raise
            timings = {**result.timings_ms, "reserve": round((t_reserved - t0) * 1000, 2)}
            return result.model_copy(update={"timings_ms": timings, "node_id": res.node_id})
        assert last_error is not None
        raise last_error

    async def _hand_off(self, res: Reservation, req: CallRequest) -> CallAnswer:
        """The call to the reserved node's worker, in a span whose context goes with it."""
        with _span("worker.hand_off", req, trace.SpanKind.CLIENT) as span:
            span.set_attribute("dragoman.node", res.node_id)
            traceparent = tracing.traceparent(span)
            if traceparent is not None:
                req = req.model_copy(update={"traceparent": traceparent})
            return await self._client_for(res.address).start_call(req)

    async def end_call(self, call_id: str, reason: str = "remote_hangup") -> bool:
        node_id = await self.registry.lookup(call_id)
        if node_id is None:
            return False
        node = await self.registry.node(node_id)
        if node is None:
            return False
        return await self._client_for(node.address).end_call(call_id, reason)

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> InviteAnswer:
        """Turn a call into a room: its node reserves the second person's slot."""
        node_id = await self.registry.lookup(call_id)
        node = await self.registry.node(node_id) if node_id else None
        if node is None:
            raise UnknownCall(call_id)
        return await self._client_for(node.address).invite(call_id, control_token, ttl_s)

    async def open_control(self, call_id: str, token: str) -> ControlLink:
        """The call's control channel on whichever node hosts it (RegistryUnavailable and
        LinkClosed pass through)."""
        deadline = time.monotonic() + self.registry.node_ttl_s
        while (node := await self._control_node(call_id)) is None:
            # A Redis that restarted empty learns a node's calls again from its next
            # heartbeat (several fit in node_ttl_s): a page reconnecting in that gap must
            # not be told "no such call", which it takes as final.
            if time.monotonic() >= deadline:
                raise LinkClosed(CLOSE_UNKNOWN_CALL, "no such call")
            await asyncio.sleep(CONTROL_LOOKUP_RETRY_S)
        return await self._client_for(node.address).open_control(call_id, token)

    async def _control_node(self, call_id: str) -> NodeInfo | None:
        # A call that ended while its page was away is gone from the registry, but its node
        # keeps its channel a while (worker.calls.control.LINGER_S) to tell the page why.
        node_id = await self.registry.lookup(call_id) or await self.registry.ended_on(call_id)
        return await self.registry.node(node_id) if node_id else None

    async def node_lost(self, call_id: str, wait_s: float) -> bool:
        """Whether the node hosting ``call_id`` is dead: it stops heartbeating for the
        registry's ``node_ttl_s``, so this waits up to ``wait_s`` to find out."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                node_id = await self.registry.lookup(call_id)
                node = await self.registry.node(node_id) if node_id else None
            except RegistryUnavailable:
                return False
            if node is None or not node.alive:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.5)

    async def _release_quietly(self, call_id: str) -> None:
        try:
            await self.registry.release(call_id)
        except RegistryUnavailable:
            pass  # the reservation expires by itself


def _span(
    name: str, req: CallRequest, kind: trace.SpanKind = trace.SpanKind.INTERNAL
) -> AbstractContextManager[trace.Span]:
    """A step of placing ``req``, under the api's request span (no-op when tracing is off)."""
    return tracing.tracer("api").start_as_current_span(
        name, kind=kind, attributes={"dragoman.call_id": req.call_id}
    )
