"""The pre-forked agent pool of one node, and how a call is bridged to its agent.

Idle agent processes are forked ahead of demand from a forkserver that already imported
everything a call needs, so a call only ever takes a process that is up and waiting; a
replacement is forked the moment one is taken. Each process runs one call and exits.

Each idle agent also has its Janus NoSIP handle attached ahead of time. Answering an
offer is then: Janus turns the caller's WebRTC offer into a plain-RTP offer (``generate``),
the agent takes the call while Janus gets the agent's plain answer (``process``) and
returns the WebRTC answer — a few milliseconds. Janus' events for the handle (WebRTC up,
hung up) go to the agent; the agent's messages for the page go to the call's control
channel (``worker.control``); when the agent exits its handle is detached, which hangs up
the caller.

Every agent is supervised (``worker.supervision``): it heartbeats on its pipe, and one that
falls silent, never gets ready, ignores an end request or overstays its call's maximum
duration is killed or ended by the worker. Agents are watched and killed through psutil
handles (pid and start time), never through ``multiprocessing``: with the forkserver start
method a Process reads liveness from a pipe to the forkserver, so losing the forkserver
would make every agent look dead and unkillable. A lost forkserver is replaced; running
agents were only its children, not its dependants, and their calls go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import psutil

from dragoman.agent import messages
from dragoman.config import Settings, settings_for_child
from dragoman.contract.calls import CallAnswer, CallRequest
from dragoman.contract.errors import (
    AgentFailed,
    CallRejected,
    NoAgentAvailable,
    UnknownCall,
    WrongCallToken,
)
from dragoman.media.plain_sdp import PlainOffer, opus_payload_type, plain_answer
from dragoman.pipeline.providers.catalog import PROVIDERS, ProviderSpec, unavailable_reason
from dragoman.worker import metrics
from dragoman.worker.channel import ChannelClosed, PipeChannel
from dragoman.worker.control import ControlHub
from dragoman.worker.gateway import Handle, MediaGateway, MediaUnavailable, OfferRejected
from dragoman.worker.rooms import Rooms, for_peer, room_event
from dragoman.worker.supervision import (
    EXIT_GRACE_S,
    AgentVitals,
    SupervisionLimits,
    beats_trustworthy,
    judge,
)

log = logging.getLogger("dragoman.worker")

AGENT_MODULE = "dragoman.agent.process"
FREEZE_MODULE = "dragoman.agent.frozen"  # imported after AGENT_MODULE: see its docstring
SHARED_VAD_MODULE = "dragoman.agent.shared_vad"
SUPERVISION_PERIOD_S = 1.0
EXIT_POLL_S = 0.05
# Kill reasons that become the call's end reason (the page is told); others keep the call's.
CALL_KILL_REASONS = frozenset({"agent_unresponsive", "memory_limit"})


def runnable_providers(settings: Settings) -> list[ProviderSpec]:
    """The node's default provider and every other one it has the keys for."""
    return [
        spec
        for spec in PROVIDERS.values()
        if spec.name == settings.provider or unavailable_reason(spec, settings) is None
    ]


def forkserver_preload(settings: Settings) -> list[str]:
    """What the forkserver imports once, so a fresh agent forks in milliseconds instead of
    importing SDKs (or loading the VAD) on the core its node's calls run on: the agent
    module, the modules of the providers this node can run, the shared VAD if one of them
    uses it, and last the module that freezes all of it out of the GC's reach."""
    specs = runnable_providers(settings)
    providers = sorted({spec.builder.split(":")[0] for spec in specs})
    vad = [SHARED_VAD_MODULE] if any(spec.uses_vad for spec in specs) else []
    return [AGENT_MODULE, *providers, *vad, FREEZE_MODULE]


def idle_target(settings: Settings, measured_mb: float | None = None) -> int:
    """How many idle processes to keep: every call slot, within the idle memory budget.

    The budget is divided by the unique memory (USS) of an idle agent as measured on this
    node once its pool is up (``measured_mb``), or until then by the configured estimate."""
    if settings.idle_target is not None:
        return settings.idle_target
    per_agent = measured_mb if measured_mb else settings.idle_process_estimate_mb
    by_memory = int(settings.idle_memory_budget_mb // max(1.0, per_agent))
    return max(1, min(settings.max_calls, by_memory))


def idle_uss_mb(pids: list[int], sample: int = 5) -> float | None:
    """Median unique memory (MB) of up to ``sample`` idle agents; None if none could be read."""
    found = []
    for pid in pids[:sample]:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid).memory_full_info().uss / 2**20)
    return round(sorted(found)[len(found) // 2], 1) if found else None


class InferenceStatus(Protocol):
    """The node's inference service as the pool sees it (see ``worker.inference_service``)."""

    @property
    def up(self) -> bool: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass(eq=False)  # identity semantics: agents live in sets
class Agent:
    process: BaseProcess
    chan: PipeChannel
    fork_requested_at: float
    state: str = "starting"  # starting | idle | reserved | active | ending
    call_id: str | None = None
    answer: asyncio.Future | None = None
    end_reason: str | None = None
    said_ended: bool = False  # the agent itself reported its call's end
    rtp_port: int | None = None  # its loopback RTP port (RTCP is the next one)
    handle: Handle | None = None  # its Janus NoSIP handle, attached while idle
    ps: psutil.Process | None = None  # taken right after the fork: liveness and kill
    forked_at: float | None = None  # time.monotonic() when Process.start() returned
    last_seen: float = 0.0  # its last pipe message (a heartbeat at least every second)
    call_started_at: float | None = None
    call_cap_s: float | None = None  # this call's max_call_s (None: the node's)
    request: CallRequest | None = None  # the call it holds (languages, provider, mode)
    ending_since: float | None = None
    pid: int = -1  # set once forked (the Process object is closed after its exit)


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


def _rss(ps: psutil.Process | None) -> int | None:
    if ps is None:
        return None
    try:
        return ps.memory_info().rss
    except psutil.Error:
        return None


def _forkserver_pid() -> int | None:
    return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)


def reset_dead_forkserver() -> bool:
    """True if the forkserver had died: its state is cleared so the next fork (or
    ``ensure_running``) starts a new one. CPython keeps it in private attributes of
    ``multiprocessing.forkserver._forkserver`` (3.11: address, alive fd, pid) and only
    notices a dead one by ``waitpid`` in ``ensure_running``, which fails for good if
    anyone else reaped it first; clearing it here makes recovery certain."""
    fs = multiprocessing.forkserver._forkserver
    lock = getattr(fs, "_lock", None)
    if lock is None or not hasattr(fs, "_forkserver_pid"):
        return False
    if not lock.acquire(timeout=0.1):  # a fork in progress holds it; look again next tick
        return False
    try:
        pid = fs._forkserver_pid
        if pid is None:
            return False
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped elsewhere: gone all the same
        if not done:
            return False
        with contextlib.suppress(OSError, TypeError):
            os.close(fs._forkserver_alive_fd)
        address = fs._forkserver_address
        if isinstance(address, str) and not multiprocessing.util.is_abstract_socket_namespace(
            address
        ):
            with contextlib.suppress(OSError):
                os.unlink(address)
        fs._forkserver_address = fs._forkserver_alive_fd = fs._forkserver_pid = None
        return True
    finally:
        lock.release()


class AgentPool:
    def __init__(
        self,
        settings: Settings,
        inference_socket: str,
        gateway: MediaGateway,
        hub: ControlHub,
        inference: InferenceStatus | None = None,
    ) -> None:
        self.settings = settings
        self.inference = inference
        self._limits = SupervisionLimits.from_settings(settings)
        self.inference_socket = inference_socket
        self.gateway = gateway
        self.hub = hub
        self.idle_target = idle_target(settings)
        self.idle_agent_mb: float | None = None  # measured USS of an idle agent
        self.refill_ms: deque[float] = deque(maxlen=64)  # recent forks: requested → ready
        self.draining = False
        self.force_stop = False  # set by a second Ctrl-C: end running calls now
        # Pipecat logs its banner at import through loguru; the forkserver imports it once.
        os.environ.setdefault("LOGURU_LEVEL", "WARNING")
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(forkserver_preload(settings))
        self._settings_json = settings_for_child(settings)
        self._agents: set[Agent] = set()
        self._idle: deque[Agent] = deque()
        self._calls: dict[str, Agent] = {}
        self.rooms = Rooms()
        self._idle_changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.calls_total = 0
        self._startup_failures = 0  # consecutive agents that died before becoming ready
        self._backoff_until = 0.0  # no fork before this (time.monotonic()) after failures
        # When the forkserver first forked since it (re)started (its preload done); None: not yet.
        self._forkserver_warm_since: float | None = None
        self.forkserver_restarts = 0
        self.killed: dict[str, int] = {}  # agents the worker killed, by reason
        # Called with (call_id, reason) once a call's process is gone, whatever ended it.
        self.on_call_ended: Callable[[str, str], Awaitable[None]] | None = None
        self.outcomes: dict[str, int] = {}

    # --- views ---------------------------------------------------------------------------
    @property
    def busy(self) -> int:
        return sum(1 for a in self._agents if a.state in ("reserved", "active", "ending"))

    @property
    def starting(self) -> int:
        return sum(1 for a in self._agents if a.state == "starting")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "capacity": self.settings.max_calls,
            "active_calls": self.busy,
            "idle_agents": len(self._idle),
            "starting_agents": self.starting,
            "idle_target": self.idle_target,
            "idle_agent_mb": self.idle_agent_mb,
            "agent_ready_ms": list(self.refill_ms),
            "draining": self.draining,
            "calls_total": self.calls_total,
            "outcomes": dict(self.outcomes),
            # Processes holding a call, for benchmarks that measure a call's memory.
            "call_pids": sorted(a.pid for a in self._agents if a.state == "active"),
            "supervision": {
                "killed": dict(self.killed),
                "forkserver_restarts": self.forkserver_restarts,
                "forkserver_pid": _forkserver_pid(),
            },
        }
        if self.inference is not None:
            stats["inference"] = self.inference.stats()
        return stats

    async def start(self, wait_ready_s: float = 60.0) -> None:
        """Fork the idle pool and wait until it is ready (imports are paid once, here)."""
        self._top_up()
        self._spawn_task(self._supervision_loop())
        deadline = time.monotonic() + wait_ready_s
        while len(self._idle) < self.idle_target and time.monotonic() < deadline:
            self._idle_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle_changed.wait(), 1.0)
        # Size the pool from what an idle agent really holds, then fill it to that size.
        measured = await asyncio.to_thread(idle_uss_mb, [a.pid for a in self._idle])
        if measured is not None:
            self.idle_agent_mb = measured
            self.idle_target = idle_target(self.settings, measured)
            self._top_up()

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _top_up(self) -> None:
        if self.draining or time.monotonic() < self._backoff_until:
            return
        free_slots = self.settings.max_calls - self.busy
        want = min(self.idle_target, free_slots) - len(self._idle) - self.starting
        for _ in range(max(0, want)):
            self._fork()

    def _fork(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_agent_entry,
            args=(child, self._settings_json, self.inference_socket),
            daemon=False,
            name="dragoman-agent",
        )
        agent = Agent(process=proc, chan=PipeChannel(parent), fork_requested_at=time.monotonic())
        self._agents.add(agent)  # counted as "starting" at once, so nothing forks twice
        self._spawn_task(self._start_agent(agent, child))

    async def _start_agent(self, agent: Agent, child: Any) -> None:
        # Process.start() talks to the forkserver synchronously (and, the first time, waits
        # for it to preload); off the event loop it never delays a call being answered.
        try:
            await asyncio.to_thread(agent.process.start)
        except Exception as e:
            self._agents.discard(agent)
            agent.chan.close()
            self._check_forkserver()  # one that died mid-fork is replaced
            self._startup_failed(f"could not fork an agent: {e!r}")
            return
        finally:
            child.close()
        agent.forked_at = agent.last_seen = time.monotonic()
        if self._forkserver_warm_since is None:
            self._forkserver_warm_since = agent.forked_at
        agent.pid = agent.process.pid or -1
        try:
            agent.ps = psutil.Process(agent.pid)
        except psutil.Error:
            agent.ps = None  # already gone; its pipe is closed and it is reaped below
        await self._supervise(agent)

    def _startup_failed(self, what: str) -> None:
        # An agent that cannot even start (broken install, no memory) would otherwise be
        # re-forked in a tight loop; back off exponentially instead.
        self._startup_failures += 1
        delay = min(30.0, 0.5 * 2**self._startup_failures)
        self._backoff_until = time.monotonic() + delay
        log.error("%s; next fork in %.1f s", what, delay)

    async def _supervise(self, agent: Agent) -> None:
        """Route the agent's messages until its pipe closes, then clean up after it."""
        try:
            while True:
                msg = await agent.chan.recv()
                agent.last_seen = time.monotonic()  # any message proves its loop runs
                kind = msg.get("kind")
                if kind == "ping":
                    continue
                if kind == "msg":
                    self.hub.publish(agent.call_id, msg["msg"])
                    peer = self.rooms.peer(agent.call_id)
                    shared = for_peer(msg["msg"]) if peer else None
                    if shared is not None:
                        self.hub.publish(peer, shared)
                elif kind == "room_audio":
                    peer_agent = self._calls.get(self.rooms.peer(agent.call_id) or "")
                    if peer_agent is not None:
                        peer_agent.chan.send(msg)  # its caller hears our caller, translated
                elif kind == "ready" and agent.state == "starting":
                    ready_ms = (time.monotonic() - agent.fork_requested_at) * 1000
                    self.refill_ms.append(round(ready_ms, 1))
                    agent.state = "idle"
                    agent.rtp_port = int(msg["rtp_port"])
                    self._startup_failures = 0
                    self._idle.append(agent)
                    self._idle_changed.set()
                    self._spawn_task(self._prepare(agent))
                elif kind in ("accepted", "error") and agent.answer and not agent.answer.done():
                    agent.answer.set_result(msg)
                elif kind == "ended":
                    agent.end_reason = msg.get("reason")
                    agent.said_ended = True
                elif kind == "pacing":
                    metrics.AUDIO_FRAMES.labels("on_time").inc(msg["frames"] - msg["late"])
                    metrics.AUDIO_FRAMES.labels("late").inc(msg["late"])
        except ChannelClosed:
            pass
        finally:
            await self._reap(agent)

    async def _reap(self, agent: Agent) -> None:
        died_starting = agent.state == "starting" and not self.draining
        if agent.answer and not agent.answer.done():
            agent.answer.set_exception(AgentFailed("agent process exited before answering"))
        if agent.state in ("active", "ending"):
            self._count(agent.end_reason or "agent_lost")
        if agent.state in ("active", "ending") and not agent.said_ended:
            # It died without a word (killed, crashed): the page still learns the call ended.
            reason = agent.end_reason or "agent_lost"
            self.hub.publish(agent.call_id, messages.state("ended", reason))
        if agent.call_id and agent.state in ("reserved", "active", "ending") and self.on_call_ended:
            self._spawn_task(self.on_call_ended(agent.call_id, agent.end_reason or "agent_lost"))
        if agent in self._idle:
            self._idle.remove(agent)
        alone = self.rooms.unlink(agent.call_id)
        if alone is not None and alone in self._calls:
            self._calls[alone].chan.send({"kind": "room_left"})
            self.hub.publish(alone, room_event("peer_left"))
        if agent.call_id and self._calls.get(agent.call_id) is agent:
            del self._calls[agent.call_id]
        agent.state = "gone"
        self._agents.discard(agent)
        agent.chan.close()
        self.hub.ended(agent.call_id)
        # Detaching the handle hangs up the caller's WebRTC (the agent is gone either way).
        self._spawn_task(self.gateway.detach(agent.handle))
        agent.handle = None
        # Its pipe closed: it is leaving. Watched through psutil, not the Process (see the
        # module docstring); a process that lingers is killed.
        if not await self._wait_exit(agent, EXIT_GRACE_S):
            self._kill(agent, "exit_timeout")
            await self._wait_exit(agent, 1.0)
        # Collect the Process (exit code, its fds); quick once the process is gone.
        await asyncio.to_thread(agent.process.join, 1.0)
        code = agent.process.exitcode
        with contextlib.suppress(ValueError):
            agent.process.close()
        if died_starting:
            self._startup_failed(f"agent {agent.pid} exited during start (exit code {code})")
        self._top_up()

    async def _wait_exit(self, agent: Agent, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while alive(agent.ps):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(EXIT_POLL_S)
        return True

    def _kill(self, agent: Agent, why: str) -> None:
        """SIGKILL through its psutil handle (which refuses a reused pid)."""
        if not alive(agent.ps):
            return
        assert agent.ps is not None
        self.killed[why] = self.killed.get(why, 0) + 1
        metrics.AGENTS_KILLED.labels(why).inc()
        with contextlib.suppress(psutil.Error):
            agent.ps.kill()

    # --- calls ---------------------------------------------------------------------------
    async def _take_idle(self) -> Agent:
        deadline = time.monotonic() + self.settings.agent_wait_s
        while True:
            if self.draining:
                raise NoAgentAvailable("This node is draining.", self.settings.retry_after_s)
            if self.busy >= self.settings.max_calls:
                raise NoAgentAvailable("All interpreters are busy.", self.settings.retry_after_s)
            if self._idle:
                return self._idle.popleft()
            if self.starting == 0:
                self._top_up()  # a slot is free: fork its agent now (unless backing off)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.starting == 0:
                raise NoAgentAvailable(
                    "No interpreter process is ready yet.", self.settings.retry_after_s
                )
            # A replacement is being forked; it is ready in tens of milliseconds.
            self._idle_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle_changed.wait(), remaining)

    async def _prepare(self, agent: Agent) -> None:
        """Attach an idle agent's Janus handle ahead of its call."""
        if agent.state != "idle" or self.gateway.valid(agent.handle) or not self.gateway.up:
            return
        try:
            handle = await self.gateway.attach()
        except MediaUnavailable as e:
            log.debug("could not attach a handle for agent %s: %s", agent.pid, e)
            return
        if agent.state == "idle" and not self.gateway.valid(agent.handle):
            agent.handle = handle
        else:  # it took a call meanwhile (with a handle of its own) or exited
            await self.gateway.detach(handle)

    def _back_to_idle(self, agent: Agent, call_id: str, fresh_handle: bool) -> None:
        """The call never reached the agent: it waits for the next one."""
        if self._calls.get(call_id) is agent:
            del self._calls[call_id]
        agent.call_id = None
        if agent.state != "reserved":
            return
        agent.state = "idle"
        if fresh_handle:
            self._spawn_task(self.gateway.detach(agent.handle))
            agent.handle = None
        self._idle.appendleft(agent)
        self._idle_changed.set()
        self._spawn_task(self._prepare(agent))

    def on_media_event(self, agent: Agent, kind: str, msg: dict[str, Any]) -> None:
        """Janus' events for an agent's handle."""
        if agent.state not in ("active", "ending"):
            return
        if kind == "webrtcup":
            agent.chan.send({"kind": "media_up"})
        elif kind == "hangup":  # ICE failed, DTLS alert, the caller closed the connection
            agent.chan.send({"kind": "media_down", "reason": msg.get("reason", "")})

    def media_lost(self) -> None:
        """The gateway died: every call on this node lost its caller."""
        for agent in list(self._agents):
            agent.handle = None
            if agent.state in ("reserved", "active"):
                agent.end_reason = "media_lost"
                self._request_end(agent, "media_lost")

    def media_restored(self) -> None:
        for agent in list(self._idle):
            self._spawn_task(self._prepare(agent))

    def call_ids(self) -> set[str]:
        return set(self._calls)

    def _room_host(self, req: CallRequest) -> Agent | None:
        """A room guest's host, still on its call and alone; CallRejected otherwise."""
        if req.room_host is None:
            return None
        host = self._calls.get(req.room_host)
        if host is None or host.state != "active":
            raise CallRejected("room_ended", "The person who invited you has left the call.")
        if self.rooms.peer(req.room_host) is not None:
            raise CallRejected("room_full", "This room already has two people.")
        return host

    def invitable(self, call_id: str, control_token: str) -> CallRequest:
        """The call a room invitation is for, if the token is its control token and it can
        take a second person; UnknownCall, WrongCallToken or CallRejected otherwise."""
        agent = self._calls.get(call_id)
        if agent is None or agent.state != "active" or agent.request is None:
            raise UnknownCall(call_id)
        if not self.hub.authorized(call_id, control_token):
            raise WrongCallToken(call_id)
        req = agent.request
        if req.mode != "one_way":
            raise CallRejected("bad_mode", "Only a one-way call can invite a second person.")
        if self.rooms.peer(call_id) is not None:
            raise CallRejected("room_full", "This call already has a second person.")
        return req

    async def start_call(self, req: CallRequest) -> CallAnswer:
        t0 = time.perf_counter()
        opus_pt = opus_payload_type(req.sdp)
        if opus_pt is None:  # nothing to bridge: refused before it costs anything
            self._count("rejected")
            raise CallRejected("bad_sdp", "Malformed SDP offer: no Opus audio offered")
        if not self.gateway.up:
            raise NoAgentAvailable("This node's media gateway is restarting.", 1)
        if self.inference is not None and not self.inference.up and self._uses_inference(req):
            raise NoAgentAvailable("This node's speech service is restarting.", 1)
        host = self._room_host(req)
        agent = await self._take_idle()
        agent.state = "reserved"
        agent.call_id = req.call_id
        self._calls[req.call_id] = agent
        self._top_up()  # fork the replacement now, while this call is being answered
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
            self._back_to_idle(agent, req.call_id, fresh_handle=True)
            self._count("rejected")
            raise CallRejected("bad_sdp", f"Malformed SDP offer: {e}") from e
        except MediaUnavailable as e:
            self._back_to_idle(agent, req.call_id, fresh_handle=True)
            raise NoAgentAvailable(f"This node's media gateway is unavailable: {e}", 1) from e
        t_bridged = time.perf_counter()
        self.hub.open(
            req.call_id,
            req.control_token,
            lambda m: agent.chan.send({"kind": "control", "msg": m}),
        )
        reply, answer_sdp = await self._answer(agent, req, plain, webrtc_answer)
        if reply["kind"] == "error":
            self._count("rejected")
            self.hub.drop(req.call_id)
            raise CallRejected(reply["code"], reply["message"])
        agent.state = "active"
        agent.call_started_at = time.monotonic()
        agent.call_cap_s = req.max_call_s
        agent.request = req
        if host is not None:
            if host.state == "active" and self.rooms.peer(host.call_id) is None:
                self.rooms.link(req.call_id, host.call_id or "")
                host.chan.send({"kind": "room_joined", "language": req.source})
                self.hub.publish(host.call_id, room_event("joined", language=req.source))
            else:  # the host left while this call was being answered
                self._request_end(agent, "room_ended")
        self.calls_total += 1
        timings = dict(reply.get("timings_ms", {}))
        timings["wait_agent"] = round((t_taken - t0) * 1000, 2)
        timings["gateway_offer"] = round((t_bridged - t_taken) * 1000, 2)
        timings["dispatch"] = round((time.perf_counter() - t0) * 1000, 2)
        return CallAnswer(sdp=answer_sdp, timings_ms=timings, pid=agent.pid)

    async def _answer(
        self,
        agent: Agent,
        req: CallRequest,
        plain: PlainOffer,
        webrtc_answer: asyncio.Future[str],
    ) -> tuple[dict[str, Any], str]:
        """The agent takes the call while Janus finishes the WebRTC answer; both within the
        answer deadline, or the agent is killed (its exit frees the handle)."""
        agent.answer = asyncio.get_running_loop().create_future()
        call = {k: v for k, v in req.model_dump().items() if k not in ("sdp", "control_token")}
        peer = {"address": plain.address, "port": plain.port, "payload_type": plain.opus_pt}
        agent.chan.send({"kind": "offer", **call, "peer": peer})
        try:
            reply, answer_sdp = await asyncio.wait_for(
                asyncio.gather(agent.answer, webrtc_answer),
                self.settings.agent_answer_timeout_s,
            )
        except (TimeoutError, AgentFailed, MediaUnavailable) as e:
            webrtc_answer.cancel()
            self._kill(agent, "answer_timeout")
            self.hub.drop(req.call_id)
            self._count("agent_failed")
            raise AgentFailed(f"agent {agent.pid} did not answer: {e or 'timeout'}") from e
        return reply, answer_sdp

    def _uses_inference(self, req: CallRequest) -> bool:
        spec = PROVIDERS.get(req.provider or self.settings.provider)
        return spec is None or spec.kind == "local"

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def end_call(self, call_id: str, reason: str = "remote_hangup") -> bool:
        agent = self._calls.get(call_id)
        if agent is None:
            return False
        self._request_end(agent, reason)
        return True

    def _request_end(self, agent: Agent, reason: str) -> None:
        if agent.state == "ending":
            return
        agent.state = "ending"
        agent.ending_since = time.monotonic()  # the supervisor kills it after EXIT_GRACE_S
        if agent.end_reason is None:
            agent.end_reason = reason  # what the page is told if it has to be killed
        agent.chan.send({"kind": "end", "reason": reason})

    # --- supervision ---------------------------------------------------------------------
    async def _supervision_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(SUPERVISION_PERIOD_S)
            now = time.monotonic()
            trust = beats_trustworthy(
                now - last, SUPERVISION_PERIOD_S, self._limits.heartbeat_timeout_s
            )
            last = now
            try:
                self._supervise_once(now, trust)
            except Exception:  # the supervisor must outlive any one bad tick
                log.exception("agent supervision failed")

    def _supervise_once(self, now: float, trust_beats: bool) -> None:
        """Gather each agent's vitals, act on the policy's verdict; then replace a lost
        forkserver and fork what the pool lacks (after any back-off)."""
        self._check_forkserver()
        for agent in list(self._agents):
            if agent.state == "gone":
                continue
            vitals = AgentVitals(
                now=now,
                state=agent.state,
                fork_requested_at=agent.fork_requested_at,
                forked_at=agent.forked_at,
                last_seen=agent.last_seen if trust_beats else now,
                call_started_at=agent.call_started_at,
                call_cap_s=agent.call_cap_s,
                ending_since=agent.ending_since,
                rss_bytes=_rss(agent.ps) if agent.forked_at is not None else None,
                forkserver_warm_since=self._forkserver_warm_since,
            )
            verdict = judge(self._limits, vitals)
            if verdict is None:
                continue
            if verdict.action == "end":
                log.warning(
                    "call %s outlived max_call_s + grace; the worker ends it", agent.call_id
                )
                self._request_end(agent, verdict.reason)
            elif verdict.action == "kill":
                log.warning("agent %s (%s): %s; killing it", agent.pid, agent.state, verdict.reason)
                if verdict.reason in CALL_KILL_REASONS and not agent.said_ended:
                    agent.end_reason = verdict.reason
                if agent in self._idle:  # no call may take it before its exit is seen
                    self._idle.remove(agent)
                self._kill(agent, verdict.reason)
            elif verdict.action == "kill_forkserver":
                self._kill_forkserver(verdict.reason)
        self._top_up()

    def _check_forkserver(self) -> None:
        if not reset_dead_forkserver():
            return
        self.forkserver_restarts += 1
        metrics.FORKSERVER_RESTARTS.inc()
        self._forkserver_warm_since = None
        log.error("the agents' forkserver died; starting a new one (running calls go on)")
        if not self.draining:
            # Start it now, so its preload is done before the next call needs a fork.
            self._spawn_task(self._restart_forkserver())

    async def _restart_forkserver(self) -> None:
        try:
            await asyncio.to_thread(multiprocessing.forkserver.ensure_running)
        except Exception:
            log.exception("could not start a new forkserver (the next fork retries)")

    def _kill_forkserver(self, why: str) -> None:
        """A forkserver that keeps forks waiting: kill it (its children, the agents, live
        on); the waiting forks fail and the next tick replaces it."""
        pid = _forkserver_pid()
        if pid is None:
            return
        log.error("the agents' forkserver %s is stuck (%s); killing it", pid, why)
        self._forkserver_warm_since = None  # no second verdict while it is being replaced
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking calls, let running calls finish (up to timeout_s), then stop all."""
        self.draining = True
        while self._idle:
            self._idle.popleft().chan.send({"kind": "stop"})
        for agent in list(self._agents):
            if agent.state == "starting":
                agent.chan.send({"kind": "stop"})
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline and not self.force_stop:
            await asyncio.sleep(0.2)
        for agent in list(self._agents):
            if agent.state in ("reserved", "active"):
                self._request_end(agent, "draining")
        deadline = time.monotonic() + EXIT_GRACE_S + 1
        while self._agents and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for agent in list(self._agents):
            self._kill(agent, "drain_timeout")
        for task in list(self._tasks):
            task.cancel()


def _agent_entry(conn: Any, settings_json: str, socket_path: str) -> None:
    # Imported here so the pool module stays light; in the forkserver it is preloaded.
    from dragoman.agent.process import agent_main

    agent_main(conn, settings_json, socket_path)
