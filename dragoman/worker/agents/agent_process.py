"""One agent process as the worker owns it: its fork, its typed pipe, its state, its vital
signs (start deadline, heartbeat, memory, call deadline) and the kill that backs them up.

Agents are watched and killed through psutil handles (pid and start time), never through
``multiprocessing``: with the forkserver start method a Process reads liveness from a pipe
to the forkserver, so losing the forkserver would make every agent look dead and
unkillable. What to do about an agent is decided by ``worker.agents.vitals.judge`` from the
``AgentVitals`` gathered here; the pool carries the verdict out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from enum import Enum
from multiprocessing.context import ForkServerContext
from typing import Any, Protocol, assert_never

import psutil
from pydantic import BaseModel

from dragoman.contract.calls import CallRequest
from dragoman.contract.channel import ChannelClosed, PipeChannel
from dragoman.contract.errors import AgentFailed
from dragoman.contract.pipe import (
    TO_WORKER,
    Accepted,
    End,
    Ended,
    FromPage,
    MediaDown,
    MediaUp,
    Offer,
    Pacing,
    Ping,
    Ready,
    Refused,
    RoomAudio,
    RoomJoined,
    RoomLeft,
    RtpPeer,
    Stop,
    ToPage,
    ToWorker,
)
from dragoman.worker import metrics
from dragoman.worker.agents.vitals import EXIT_GRACE_S, AgentVitals
from dragoman.worker.media.gateway import Handle

log = logging.getLogger("dragoman.worker")

EXIT_POLL_S = 0.05
# Kill reasons that become the call's end reason (the page is told); others keep the call's.
CALL_KILL_REASONS = frozenset({"agent_unresponsive", "memory_limit"})


class AgentState(Enum):
    """Where an agent process is in its one-call life (always forward, never back, except
    RESERVED → IDLE when a call never reached it)."""

    STARTING = "starting"  # fork requested or forked; it has not said "ready" yet
    IDLE = "idle"  # ready: waiting in the pool's idle queue with its RTP port bound
    RESERVED = "reserved"  # taken for a call: its offer is being bridged and answered
    ACTIVE = "active"  # holds an answered call
    ENDING = "ending"  # asked to end its call (or to stop); killed after EXIT_GRACE_S
    # Its pipe closed: the process has exited or is being reaped (waited for, killed if it
    # lingers, joined). No longer counted in the pool nor supervised.
    GONE = "gone"


BUSY = frozenset({AgentState.RESERVED, AgentState.ACTIVE, AgentState.ENDING})
IN_CALL = frozenset({AgentState.ACTIVE, AgentState.ENDING})


def alive(ps: psutil.Process | None) -> bool:
    """Whether the process still runs. psutil compares its start time, so a reused pid is
    not mistaken for it; a zombie counts as gone (and is reaped if it was reparented to us:
    orphans of a lost forkserver come here where this process is init or a subreaper)."""
    if ps is None:
        return False
    try:
        if not ps.is_running():
            return False
        if ps.status() != psutil.STATUS_ZOMBIE:
            return True
        if ps.ppid() == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ps.pid, os.WNOHANG)
    except psutil.Error:
        pass
    return False


def _agent_entry(conn: Any, settings_json: str, socket_path: str) -> None:
    # Imported here so the worker stays light; in the forkserver it is preloaded.
    from dragoman.agent.process import agent_main

    agent_main(conn, settings_json, socket_path)


class AgentListener(Protocol):
    """Who hears what an agent says that concerns others (``AgentProcess._dispatch``)."""

    def agent_ready(self, agent: AgentProcess) -> None:
        """It is idle, its RTP port bound: it may take a call."""

    def agent_to_page(self, agent: AgentProcess, msg: dict[str, Any]) -> None:
        """A message for its call's page (a ``contract.page`` message)."""

    def agent_room_audio(self, agent: AgentProcess, audio: RoomAudio) -> None:
        """Its translated speech, for the room's other participant."""


class AgentProcess:
    """One child: forked from the forkserver, one call at most, then it exits."""

    def __init__(
        self,
        ctx: ForkServerContext,
        settings_json: str,
        inference_socket: str,
        on_kill: Callable[[str], None],
    ) -> None:
        parent, self._child = ctx.Pipe()
        # Open from the start: a "stop" sent while it is still forking waits in the pipe.
        self.chan: PipeChannel[ToWorker] = PipeChannel(parent, TO_WORKER)
        self.process = ctx.Process(
            target=_agent_entry,
            args=(self._child, settings_json, inference_socket),
            daemon=False,
            name="dragoman-agent",
        )
        self._on_kill = on_kill
        self.state = AgentState.STARTING
        self.fork_requested_at = time.monotonic()
        self.forked_at: float | None = None  # time.monotonic() when Process.start() returned
        self.ready_ms: float | None = None  # fork requested → "ready"
        self.pid = -1  # set once forked (the Process object is closed after its exit)
        self.ps: psutil.Process | None = None  # taken right after the fork: liveness, kill
        self.last_seen = 0.0  # its last pipe message (a heartbeat at least every second)
        self.rtp_port: int | None = None  # its loopback RTP port (RTCP is the next one)
        self.handle: Handle | None = None  # its Janus NoSIP handle, attached while idle
        # The call it holds.
        self.call_id: str | None = None
        self.request: CallRequest | None = None  # languages, provider, mode, max_call_s
        self.call_started_at: float | None = None
        self.media_up_at: float | None = None  # its caller's WebRTC came up (first time)
        self.answer: asyncio.Future[Accepted | Refused] | None = None
        self.ending_since: float | None = None
        self.end_reason: str | None = None  # what the page is told if it has to be killed
        self.said_ended = False  # the agent itself reported its call's end

    def __repr__(self) -> str:
        return f"<agent {self.pid} {self.state.value} call={self.call_id}>"

    # --- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Fork it. Process.start() talks to the forkserver synchronously (and, the first
        time, waits for it to preload); off the event loop it never delays a call being
        answered. Raises what the fork raised (the pipe is closed then)."""
        try:
            await asyncio.to_thread(self.process.start)
        except Exception:
            self.chan.close()
            raise
        finally:
            self._child.close()
        self.forked_at = self.last_seen = time.monotonic()
        self.pid = self.process.pid or -1
        try:
            self.ps = psutil.Process(self.pid)
        except psutil.Error:
            self.ps = None  # already gone; its pipe is closed and it is reaped below

    async def serve(self, listener: AgentListener) -> None:
        """Read its pipe until it closes, each message through ``_dispatch``."""
        with contextlib.suppress(ChannelClosed):
            while True:
                msg = await self.chan.recv()
                self.last_seen = time.monotonic()  # any message proves its loop runs
                self._dispatch(msg, listener)

    def _dispatch(self, msg: ToWorker, listener: AgentListener) -> None:
        """The one place an agent's messages are told apart: its vital signs, readiness,
        answer and end reason are kept here; what concerns others (its readiness, its
        page's messages, its room audio) goes to ``listener``."""
        match msg:
            case Ping():
                pass
            case Ready() if self.state is AgentState.STARTING:
                self.ready_ms = round((self.last_seen - self.fork_requested_at) * 1000, 1)
                self.state = AgentState.IDLE
                self.rtp_port = msg.rtp_port
                listener.agent_ready(self)
            case Ready():
                pass  # only the first counts
            case Accepted() | Refused():
                if self.answer is not None and not self.answer.done():
                    self.answer.set_result(msg)
            case Ended():
                self.end_reason = msg.reason
                self.said_ended = True
            case Pacing():
                metrics.AUDIO_FRAMES.labels("on_time").inc(msg.frames - msg.late)
                metrics.AUDIO_FRAMES.labels("late").inc(msg.late)
            case ToPage():
                listener.agent_to_page(self, msg.msg)
            case RoomAudio():
                listener.agent_room_audio(self, msg)
            case _:
                assert_never(msg)

    def closed(self) -> AgentState:
        """Its pipe closed (it exited, or is leaving): GONE now; the state it was in."""
        was, self.state = self.state, AgentState.GONE
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(AgentFailed("agent process exited before answering"))
        self.chan.close()
        return was

    async def reap(self) -> int | None:
        """Once gone: wait for the process to exit (killed if it lingers), collect it; its
        exit code."""
        if not await self.wait_exit(EXIT_GRACE_S):
            self.kill("exit_timeout")
            await self.wait_exit(1.0)
        # Collect the Process (exit code, its fds); quick once the process is gone.
        await asyncio.to_thread(self.process.join, 1.0)
        code = self.process.exitcode
        with contextlib.suppress(ValueError):
            self.process.close()
        return code

    async def wait_exit(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while alive(self.ps):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(EXIT_POLL_S)
        return True

    def kill(self, why: str) -> None:
        """SIGKILL through its psutil handle (which refuses a reused pid). One already gone
        has its pipe ended here, so ``serve`` returns and it is reaped like any other (the
        process, not its pipe, says whether it lives)."""
        if not alive(self.ps):
            if self.state is not AgentState.GONE and self.forked_at is not None:
                self.chan.peer_gone()
            return
        assert self.ps is not None
        self._on_kill(why)
        with contextlib.suppress(psutil.Error):
            self.ps.kill()

    def kill_for(self, why: str) -> None:
        """Killed on a supervision verdict: some reasons become its call's end reason."""
        if why in CALL_KILL_REASONS and not self.said_ended:
            self.end_reason = why
        self.kill(why)

    def vitals(
        self, now: float, trust_beats: bool, forkserver_warm_since: float | None
    ) -> AgentVitals:
        """What ``vitals.judge`` decides on (a silent pipe is not held against it when
        the worker's own loop was too stalled to read it)."""
        return AgentVitals(
            now=now,
            state=self.state.value,
            fork_requested_at=self.fork_requested_at,
            forked_at=self.forked_at,
            last_seen=self.last_seen if trust_beats else now,
            call_started_at=self.call_started_at,
            call_cap_s=self.request.max_call_s if self.request is not None else None,
            ending_since=self.ending_since,
            rss_bytes=self._rss() if self.forked_at is not None else None,
            forkserver_warm_since=forkserver_warm_since,
        )

    def _rss(self) -> int | None:
        if self.ps is None:
            return None
        try:
            return self.ps.memory_info().rss
        except psutil.Error:
            return None

    # --- the call ------------------------------------------------------------------------
    def reserve(self, call_id: str) -> None:
        self.state = AgentState.RESERVED
        self.call_id = call_id

    def unreserve(self) -> bool:
        """The call never reached it: idle again (False if it has moved on meanwhile)."""
        self.call_id = None
        if self.state is not AgentState.RESERVED:
            return False
        self.state = AgentState.IDLE
        return True

    def offer(self, req: CallRequest, peer: RtpPeer) -> asyncio.Future[Accepted | Refused]:
        """Send it the call; the future resolves with its ``accepted`` or ``error`` (or
        AgentFailed if it exits first)."""
        self.answer = asyncio.get_running_loop().create_future()
        # The agent needs neither the caller's SDP (Janus terminates its WebRTC) nor the
        # control token (the worker checks the page's).
        call = req.model_copy(update={"sdp": "", "control_token": ""})
        self.send(Offer(call=call, peer=peer))
        return self.answer

    def activate(self, req: CallRequest) -> None:
        self.state = AgentState.ACTIVE
        self.call_started_at = time.monotonic()
        self.request = req

    def request_end(self, reason: str) -> None:
        """Ask it to end its call; the supervisor kills it after EXIT_GRACE_S."""
        if self.state is AgentState.ENDING:
            return
        self.state = AgentState.ENDING
        self.ending_since = time.monotonic()
        if self.end_reason is None:
            self.end_reason = reason
        self.send(End(reason=reason))

    def stop(self) -> None:
        """Exit without a call (idle or starting)."""
        self.send(Stop())

    def send(self, msg: BaseModel) -> bool:
        return self.chan.send(msg)

    def media_up(self) -> None:
        if self.media_up_at is None and self.call_started_at is not None:
            self.media_up_at = time.monotonic()
            metrics.MEDIA_CONNECT_SECONDS.observe(self.media_up_at - self.call_started_at)
        self.send(MediaUp())

    def media_down(self, reason: str) -> None:
        self.send(MediaDown(reason=reason))

    def control(self, msg: Any) -> bool:
        """A message from the page; False once the agent is gone."""
        return self.send(FromPage(msg=msg))

    def room_joined(self, language: str) -> None:
        self.send(RoomJoined(language=language))

    def room_left(self) -> None:
        self.send(RoomLeft())

    def room_audio(self, audio: RoomAudio) -> None:
        self.send(audio)
