"""The calls on one node: how a call is bridged to an idle agent, which agent holds which
call, and what flows between a call's agent, its page and, in a room, the other agent.

``NodeCalls`` owns the node's agent pool (``worker.agents.pool``, which knows processes only and
tells it of each one's readiness, messages and exit), the media gateway's handles and the
control hub. Each idle agent has its Janus NoSIP handle attached ahead of time.
Answering an offer is then: Janus turns the caller's WebRTC offer into a plain-RTP offer
(``generate``), the agent takes the call while Janus gets the agent's plain answer
(``process``) and returns the WebRTC answer — a few milliseconds. Janus' events for the
handle (WebRTC up, hung up) go to the agent; the agent's messages for the page go to the
call's control channel (``worker.calls.control``); when the agent exits its handle is detached,
which hangs up the caller. A page whose network changed renegotiates its call's handle
(``worker.calls.ice_restart``) without the agent noticing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from opentelemetry import trace

from dragoman import logs, tracing
from dragoman.config import Settings
from dragoman.contract import page
from dragoman.contract.calls import CallAnswer, CallRequest
from dragoman.contract.errors import (
    AgentFailed,
    CallRejected,
    NoAgentAvailable,
    UnknownCall,
    WrongCallToken,
)
from dragoman.contract.pipe import Accepted, Refused, RoomAudio, RtpPeer
from dragoman.media.plain_sdp import PlainOffer, opus_payload_type, plain_answer
from dragoman.pipeline.providers.catalog import PROVIDERS
from dragoman.worker import metrics
from dragoman.worker.agents.agent_process import IN_CALL, AgentProcess, AgentState
from dragoman.worker.agents.pool import AgentPool
from dragoman.worker.calls.call_record import CallRecord, end_fields, log_call_end
from dragoman.worker.calls.control import ControlHub
from dragoman.worker.calls.ice_restart import IceRestarts
from dragoman.worker.calls.rooms import Rooms, for_peer, room_event
from dragoman.worker.media.gateway import MediaGateway, MediaUnavailable, OfferRejected

log = logging.getLogger("dragoman.worker")


class InferenceStatus(Protocol):
    """The node's inference service as the calls see it (see ``worker.inference_service``)."""

    @property
    def up(self) -> bool: ...

    def stats(self) -> dict[str, Any]: ...


# Called with (call_id, reason) once a call's process is gone, whatever ended it.
CallEnded = Callable[[str, str], Awaitable[None]]


async def _nobody_told(call_id: str, reason: str) -> None:
    return None


class NodeCalls:
    """The calls on one node, by call id: starts one by bridging its offer through Janus to
    an idle agent from its pool, relays what the agent says to the call's control channel
    (and, in a room, to the other agent), ends it on request, and counts each end by reason
    (``outcomes``). It owns the pool (``self.pool``) and is told of its processes' events
    (``pool.PoolEvents``), and keeps each idle agent's Janus handle attached."""

    def __init__(
        self,
        settings: Settings,
        inference_socket: str,
        gateway: MediaGateway,
        hub: ControlHub,
        inference: InferenceStatus | None,
        on_call_ended: CallEnded = _nobody_told,
    ) -> None:
        self.settings = settings
        self.pool = AgentPool(settings, inference_socket, events=self)
        self.gateway = gateway
        self.hub = hub
        self.inference = inference
        self.rooms = Rooms()
        self._calls: dict[str, AgentProcess] = {}
        self.calls_total = 0
        self.outcomes: dict[str, int] = {}
        self._records: dict[str, CallRecord] = {}  # for each call's end line (call_record)
        self.ice = IceRestarts(gateway, hub.publish, settings.ice_restarts_per_minute)
        self._on_call_ended = on_call_ended

    def call_ids(self) -> set[str]:
        return set(self._calls)

    def calls_by_provider(self) -> dict[str, int]:
        """Calls on this node by provider (those whose request is known)."""
        out: dict[str, int] = {}
        for a in self._calls.values():
            if a.request is not None:
                name = a.request.provider or self.settings.provider
                out[name] = out.get(name, 0) + 1
        return out

    @property
    def local_calls(self) -> int:
        """Calls on this node that use its inference service (their request is known)."""
        return len(self.local_call_ids())

    def holds(self) -> list[tuple[str, str, float]]:
        """(call id, limit key, max age s) of every concurrency hold the api counted this
        node's calls against (``NodeReport.holds``)."""
        return [
            (call_id, key, a.request.hold_max_age_s)
            for call_id, a in self._calls.items()
            if a.request is not None
            for key in a.request.holds
        ]

    def local_call_ids(self) -> set[str]:
        """The ids of the calls that use this node's inference service."""
        return {
            call_id
            for call_id, a in self._calls.items()
            if a.request is not None and self.uses_inference(a.request)
        }

    def stats(self) -> dict[str, Any]:
        """The node's ``/healthz`` body: its processes (``AgentPool.stats``), its calls and
        its inference service."""
        stats: dict[str, Any] = {
            **self.pool.stats(),
            "local_calls_active": self.local_calls,
            "calls_total": self.calls_total,
            "outcomes": dict(self.outcomes),
        }
        if self.inference is not None:
            stats["inference"] = self.inference.stats()
        return stats

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    # --- placing a call ------------------------------------------------------------------
    async def start_call(self, req: CallRequest) -> CallAnswer:
        logs.CALL_ID.set(req.call_id)  # this task's log lines are about this call
        # The worker's part of the call's trace, under the api's hand-off; the agent's part
        # goes under it (its offer carries this span's traceparent).
        with tracing.tracer("worker").start_as_current_span(
            "worker.start_call",
            context=tracing.parent(req.traceparent),
            kind=trace.SpanKind.SERVER,
            attributes={**tracing.call_attributes(req), "dragoman.node": self.settings.node_id},
        ) as span:
            traceparent = tracing.traceparent(span)
            if traceparent is not None:
                req = req.model_copy(update={"traceparent": traceparent})
            return await self._start_call(req, span)

    async def _start_call(self, req: CallRequest, span: trace.Span) -> CallAnswer:
        t0 = time.perf_counter()
        opus_pt = opus_payload_type(req.sdp)
        if opus_pt is None:  # nothing to bridge: refused before it costs anything
            self._count("rejected")
            raise CallRejected("bad_sdp", "Malformed SDP offer: no Opus audio offered")
        if not self.gateway.up:
            raise NoAgentAvailable("This node's media gateway is restarting.", 1)
        if self.inference is not None and not self.inference.up and self.uses_inference(req):
            raise NoAgentAvailable("This node's speech service is restarting.", 1)
        host = self._room_host(req)
        agent = await self.pool.take_idle()
        agent.reserve(req.call_id)
        self._calls[req.call_id] = agent
        self.pool.top_up()  # fork the replacement now, while this call is being answered
        t_taken = time.perf_counter()
        assert agent.rtp_port is not None
        try:
            if not self.gateway.valid(agent.handle):
                agent.handle = await self.gateway.attach()
            handle = agent.handle
            assert handle is not None
            self.gateway.subscribe(handle, lambda kind, m: self.on_media_event(agent, kind, m))
            answer = plain_answer(opus_pt, "127.0.0.1", agent.rtp_port)
            plain, webrtc_answer = await self.gateway.bridge(handle, req.sdp, answer)
        except OfferRejected as e:
            self._back_to_idle(agent, req.call_id)
            self._count("rejected")
            raise CallRejected("bad_sdp", f"Malformed SDP offer: {e}") from e
        except MediaUnavailable as e:
            self._back_to_idle(agent, req.call_id)
            raise NoAgentAvailable(f"This node's media gateway is unavailable: {e}", 1) from e
        t_bridged = time.perf_counter()
        self.ice.remember(req.call_id, plain, answer)
        self.hub.open(req.call_id, req.control_token, lambda msg: self._from_page(agent, msg))
        reply, answer_sdp = await self._answer(agent, req, plain, webrtc_answer)
        if isinstance(reply, Refused):
            self._count("rejected")
            self.hub.drop(req.call_id)
            self.ice.forget(req.call_id)
            raise CallRejected(reply.code, reply.message)
        agent.activate(req)
        if host is not None:
            if host.state is AgentState.ACTIVE and self.rooms.peer(host.call_id) is None:
                self.rooms.link(req.call_id, host.call_id or "")
                host.room_joined(req.source)
                self.hub.publish(host.call_id, room_event("joined", language=req.source))
            else:  # the host left while this call was being answered
                agent.request_end("room_ended")
        self.calls_total += 1
        timings = dict(reply.timings_ms)
        timings["wait_agent"] = round((t_taken - t0) * 1000, 2)
        timings["gateway_offer"] = round((t_bridged - t_taken) * 1000, 2)
        timings["dispatch"] = round((time.perf_counter() - t0) * 1000, 2)
        self._records[req.call_id] = CallRecord(answer_ms=timings["dispatch"])
        if span.is_recording():
            span.set_attribute("dragoman.agent_pid", agent.pid or 0)
            steps = (("agent.take_idle", t0, t_taken), ("janus.bridge", t_taken, t_bridged))
            steps += (("agent.answer", t_bridged, time.perf_counter()),)
            for name, start, end in steps:
                tracing.record(
                    tracing.tracer("worker"), name, tracing.perf_ns(start), tracing.perf_ns(end)
                )
        return CallAnswer(sdp=answer_sdp, timings_ms=timings, pid=agent.pid)

    async def _answer(
        self,
        agent: AgentProcess,
        req: CallRequest,
        plain: PlainOffer,
        webrtc_answer: asyncio.Future[str],
    ) -> tuple[Accepted | Refused, str]:
        """The agent takes the call while Janus finishes the WebRTC answer; both within the
        answer deadline, or the agent is killed (its exit frees the handle)."""
        peer = RtpPeer(address=plain.address, port=plain.port, payload_type=plain.opus_pt)
        reply = agent.offer(req, peer)
        try:
            return await asyncio.wait_for(
                asyncio.gather(reply, webrtc_answer), self.settings.agent_answer_timeout_s
            )
        except (TimeoutError, AgentFailed, MediaUnavailable) as e:
            webrtc_answer.cancel()
            agent.kill("answer_timeout")
            self.hub.drop(req.call_id)
            self.ice.forget(req.call_id)
            self._count("agent_failed")
            raise AgentFailed(f"agent {agent.pid} did not answer: {e or 'timeout'}") from e

    def _back_to_idle(self, agent: AgentProcess, call_id: str) -> None:
        """The call never reached the agent: it waits for the next one (its handle, which
        the failed bridge may have left half set up, is replaced)."""
        if self._calls.get(call_id) is agent:
            del self._calls[call_id]
        if agent.unreserve():
            self.pool.spawn(self.gateway.detach(agent.handle))
            agent.handle = None
            self.pool.requeue(agent)
            self.pool.spawn(self._prepare(agent))

    # --- idle agents' handles ------------------------------------------------------------
    def agent_ready(self, agent: AgentProcess) -> None:
        """A new idle agent (``PoolEvents``): its handle is attached ahead of its call."""
        self.pool.spawn(self._prepare(agent))

    async def _prepare(self, agent: AgentProcess) -> None:
        """Attach an idle agent's Janus handle ahead of its call."""
        idle = AgentState.IDLE
        if agent.state is not idle or self.gateway.valid(agent.handle) or not self.gateway.up:
            return
        try:
            handle = await self.gateway.attach()
        except MediaUnavailable as e:
            log.debug("could not attach a handle for agent %s: %s", agent.pid, e)
            return
        if agent.state is idle and not self.gateway.valid(agent.handle):
            agent.handle = handle
        else:  # it took a call meanwhile (with a handle of its own) or exited
            await self.gateway.detach(handle)

    def uses_inference(self, req: CallRequest) -> bool:
        spec = PROVIDERS.get(req.provider or self.settings.provider)
        return spec is None or spec.kind == "local"

    # --- rooms ---------------------------------------------------------------------------
    def _room_host(self, req: CallRequest) -> AgentProcess | None:
        """A room guest's host, still on its call and alone; CallRejected otherwise."""
        if req.room_host is None:
            return None
        host = self._calls.get(req.room_host)
        if host is None or host.state is not AgentState.ACTIVE:
            raise CallRejected("room_ended", "The person who invited you has left the call.")
        if self.rooms.peer(req.room_host) is not None:
            raise CallRejected("room_full", "This room already has two people.")
        return host

    def invitable(self, call_id: str, control_token: str) -> CallRequest:
        """The call a room invitation is for, if the token is its control token and it can
        take a second person; UnknownCall, WrongCallToken or CallRejected otherwise."""
        agent = self._calls.get(call_id)
        if agent is None or agent.state is not AgentState.ACTIVE or agent.request is None:
            raise UnknownCall(call_id)
        if not self.hub.authorized(call_id, control_token):
            raise WrongCallToken(call_id)
        req = agent.request
        if req.mode != "one_way":
            raise CallRejected("bad_mode", "Only a one-way call can invite a second person.")
        if self.rooms.peer(call_id) is not None:
            raise CallRejected("room_full", "This call already has a second person.")
        return req

    # --- while a call runs ---------------------------------------------------------------
    def _from_page(self, agent: AgentProcess, msg: dict[str, Any]) -> bool:
        """A page message for its call: the node answers an ICE restart itself; the rest
        go to the agent. False once the call is over."""
        if msg.get("type") not in page.NODE_TYPES:
            return agent.control(msg)
        if agent.state not in IN_CALL or agent.call_id is None:
            return False
        self.pool.spawn(self.ice.handle(agent.call_id, agent.handle, msg))
        return True

    def agent_to_page(self, agent: AgentProcess, msg: dict[str, Any]) -> None:
        """A message for an agent's page (and, in a room, the shared ones for the other
        page)."""
        if msg.get("type") == "metrics":
            metrics.record_marks(msg.get("marks"))
            record = self._records.get(agent.call_id or "")
            if record is not None:
                record.on_marks(msg.get("marks"))
        self.hub.publish(agent.call_id, msg)
        peer = self.rooms.peer(agent.call_id)
        shared = for_peer(msg) if peer else None
        if shared is not None:
            self.hub.publish(peer, shared)

    def agent_room_audio(self, agent: AgentProcess, audio: RoomAudio) -> None:
        """An agent's translated speech: the room's other caller hears it."""
        peer_agent = self._calls.get(self.rooms.peer(agent.call_id) or "")
        if peer_agent is not None:
            peer_agent.room_audio(audio)

    def on_media_event(self, agent: AgentProcess, kind: str, msg: dict[str, Any]) -> None:
        """Janus' events for an agent's handle."""
        if agent.state not in IN_CALL:
            return
        if kind == "webrtcup":
            agent.media_up()
        elif kind == "hangup":  # ICE failed, DTLS alert, the caller closed the connection
            agent.media_down(msg.get("reason", ""))

    def media_lost(self) -> None:
        """The gateway died: its handles are gone, and every call on this node lost its
        caller."""
        for agent in self.pool.agents():
            agent.handle = None
            if agent.state in (AgentState.RESERVED, AgentState.ACTIVE):
                agent.end_reason = "media_lost"
                agent.request_end("media_lost")

    def media_restored(self) -> None:
        for agent in self.pool.idle_agents():
            self.pool.spawn(self._prepare(agent))

    async def end_call(self, call_id: str, reason: str = "remote_hangup") -> bool:
        agent = self._calls.get(call_id)
        if agent is None:
            return False
        agent.request_end(reason)
        return True

    def agent_exited(self, agent: AgentProcess, was: AgentState) -> None:
        """An agent's pipe closed while ``was`` (``PoolEvents``): its call (if any) is over,
        and its handle is detached, which hangs up the caller's WebRTC."""
        reason = agent.end_reason or "agent_lost"
        if was in IN_CALL:
            self._count(reason)
            if not agent.said_ended:
                # It died without a word (killed, crashed): the page still learns it ended.
                self.hub.publish(agent.call_id, page.state("ended", reason))
        if agent.call_id and was in (AgentState.RESERVED, *IN_CALL):
            self._log_end(agent, reason)
            self.pool.spawn(self._on_call_ended(agent.call_id, reason))
        alone = self.rooms.unlink(agent.call_id)
        if alone is not None and alone in self._calls:
            self._calls[alone].room_left()
            self.hub.publish(alone, room_event("peer_left"))
        if agent.call_id and self._calls.get(agent.call_id) is agent:
            del self._calls[agent.call_id]
        self.ice.forget(agent.call_id)
        self.hub.ended(agent.call_id)
        self.pool.spawn(self.gateway.detach(agent.handle))
        agent.handle = None

    def _log_end(self, agent: AgentProcess, reason: str) -> None:
        call_id = agent.call_id or ""
        record = self._records.pop(call_id, None) or CallRecord()
        started = agent.call_started_at
        fields = end_fields(
            call_id,
            self.settings.node_id,
            agent.request,
            reason,
            record,
            started,
            agent.media_up_at,
            time.monotonic(),
        )
        log_call_end(fields)
