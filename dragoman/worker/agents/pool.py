"""The pre-forked agent pool of one node: the idle queue, its top-up, supervision and the
drain.

Idle agent processes (``worker.agents.agent_process``) are forked ahead of demand from a forkserver
that already imported everything a call needs (``worker.agents.forkserver``), so a call only ever
takes a process that is up and waiting; a replacement is forked the moment one is taken.
Each process runs one call and exits. The pool knows processes only: what they mean for
calls (a Janus handle attached to each idle one, the call each one holds) is its owner's,
``worker.calls.node_calls.NodeCalls``, which hears of each process' readiness, messages and exit
through ``PoolEvents``.

Every agent is supervised (``worker.agents.vitals``): it heartbeats on its pipe, and one that
falls silent, never gets ready, ignores an end request, outgrows its memory or overstays
its call's maximum duration is killed or ended by the worker. Agents that die during start
back the forking off exponentially; a lost forkserver is replaced, and running agents —
only its children, not its dependants — go on with their calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import multiprocessing
import os
import time
from collections import deque
from typing import Any, Protocol

import psutil

from dragoman.config import Settings, local_capacity, settings_for_child
from dragoman.contract.errors import NoAgentAvailable
from dragoman.contract.pipe import RoomAudio
from dragoman.worker import metrics
from dragoman.worker.agents.agent_process import BUSY, AgentListener, AgentProcess, AgentState
from dragoman.worker.agents.forkserver import Forkserver, forkserver_pid, forkserver_preload
from dragoman.worker.agents.vitals import (
    EXIT_GRACE_S,
    SupervisionLimits,
    beats_trustworthy,
    judge,
)
from dragoman.worker.restarting_child import Backoff

log = logging.getLogger("dragoman.worker")

SUPERVISION_PERIOD_S = 1.0
# The wait before the next fork after agents in a row died before becoming ready (a broken
# install, no memory): not a tight loop of forks.
FORK_BACKOFF = Backoff(base_s=0.5, cap_s=30.0)


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


class PoolEvents(AgentListener, Protocol):
    """What the pool tells its owner about its processes: each one ready (now in the idle
    queue), what each says that concerns others (``AgentListener``), and each one's exit."""

    def agent_exited(self, agent: AgentProcess, was: AgentState) -> None:
        """Its pipe closed while it was ``was``; it is out of the pool (and being reaped)."""


class AgentPool:
    """A node's agent processes: forks idle ones ahead of demand (``top_up``), hands one to
    each call (``take_idle``), supervises every one it forked, and drains. It knows
    processes only; the calls they hold (and their Janus handles) are its owner's, told
    through ``events`` (``worker.calls.node_calls.NodeCalls``)."""

    def __init__(self, settings: Settings, inference_socket: str, events: PoolEvents) -> None:
        self.settings = settings
        self.events = events
        self._limits = SupervisionLimits.from_settings(settings)
        self.inference_socket = inference_socket
        self.idle_target = idle_target(settings)
        # Local-pipeline calls admitted here (the registry enforces it; the worker reports it).
        self.local_capacity = local_capacity(settings)
        self.idle_agent_mb: float | None = None  # measured USS of an idle agent
        self.refill_ms: deque[float] = deque(maxlen=64)  # recent forks: requested → ready
        self.draining = False
        self.force_stop = False  # set by a second Ctrl-C: end running calls now
        # Pipecat logs its banner at import through loguru; the forkserver imports it once.
        os.environ.setdefault("LOGURU_LEVEL", "WARNING")
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(forkserver_preload(settings))
        self.forkserver = Forkserver()
        self._settings_json = settings_for_child(settings)
        self._agents: set[AgentProcess] = set()
        self._idle: deque[AgentProcess] = deque()
        self._idle_changed = asyncio.Event()
        # Calls waiting for an agent being forked, oldest first: each ready agent goes to the
        # oldest, so a call that arrives later never takes the one an earlier call waited for.
        self._waiters: deque[asyncio.Future[AgentProcess]] = deque()
        self._tasks: set[asyncio.Task] = set()
        self._startup_failures = 0  # consecutive agents that died before becoming ready
        self._backoff_until = 0.0  # no fork before this (time.monotonic()) after failures
        self.killed: dict[str, int] = {}  # agents the worker killed, by reason

    # --- views ---------------------------------------------------------------------------
    @property
    def busy(self) -> int:
        return sum(1 for a in self._agents if a.state in BUSY)

    @property
    def starting(self) -> int:
        return sum(1 for a in self._agents if a.state is AgentState.STARTING)

    def agents(self) -> list[AgentProcess]:
        """Every process it forked that has not exited yet."""
        return list(self._agents)

    def idle_agents(self) -> list[AgentProcess]:
        return list(self._idle)

    def stats(self) -> dict[str, Any]:
        """The processes' side of the node's ``/healthz`` (``NodeCalls.stats`` adds the
        calls')."""
        return {
            "capacity": self.settings.max_calls,
            "active_calls": self.busy,
            "local_capacity": self.local_capacity,
            "idle_agents": len(self._idle),
            "starting_agents": self.starting,
            "idle_target": self.idle_target,
            "idle_agent_mb": self.idle_agent_mb,
            "agent_ready_ms": list(self.refill_ms),
            "draining": self.draining,
            # Processes holding a call, for benchmarks that measure a call's memory.
            "call_pids": sorted(a.pid for a in self._agents if a.state is AgentState.ACTIVE),
            "supervision": {
                "killed": dict(self.killed),
                "forkserver_restarts": self.forkserver.restarts,
                "forkserver_pid": forkserver_pid(),
            },
        }

    # --- the idle queue ------------------------------------------------------------------
    async def start(self, wait_ready_s: float = 60.0) -> None:
        """Fork the idle pool and wait until it is ready (imports are paid once, here)."""
        self.top_up()
        self.spawn(self._judge_loop())
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
            self.top_up()

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task the pool keeps (and cancels when it has drained). Its own
        context: a node task (a replacement's fork) started while placing a call must not
        log under that call's id (``logs.CALL_ID``)."""
        task = asyncio.create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        # A task that dies of an exception (an agent's life, a handle's preparation) would
        # otherwise leave its agent unaccounted for without a word.
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("pool task %s failed", task.get_coro(), exc_info=e)

    def top_up(self) -> None:
        """Fork what the idle queue lacks for the free call slots (unless backing off): the
        idle target, plus one for each call already waiting — so a burst beyond the buffer has
        every one of its forks under way at once instead of waiting for a second round."""
        if self.draining or time.monotonic() < self._backoff_until:
            return
        free_slots = self.settings.max_calls - self.busy
        wanted = min(self.idle_target + len(self._waiters), free_slots)
        for _ in range(max(0, wanted - len(self._idle) - self.starting)):
            agent = AgentProcess(
                self._ctx, self._settings_json, self.inference_socket, self._count_kill
            )
            self._agents.add(agent)  # counted as starting at once, so nothing forks twice
            self.spawn(self._run(agent))

    async def take_idle(self) -> AgentProcess:
        """An idle agent for a call, waiting up to ``agent_wait_s`` for one being forked (in
        arrival order); NoAgentAvailable when the node is draining, full or has none coming."""
        if self.draining:
            raise NoAgentAvailable("This node is draining.", self.settings.retry_after_s)
        if self.busy >= self.settings.max_calls:
            raise NoAgentAvailable("All interpreters are busy.", self.settings.retry_after_s)
        if self._idle and not self._waiters:
            return self._idle.popleft()
        waiter: asyncio.Future[AgentProcess] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            self._hand_idle()  # idle ones left behind by waiters that gave up
            self.top_up()  # this call's own agent is forked now (unless backing off)
            if not waiter.done() and self.starting == 0:
                raise NoAgentAvailable(
                    "No interpreter process is ready yet.", self.settings.retry_after_s
                )
            await asyncio.wait({waiter}, timeout=self.settings.agent_wait_s)
        except asyncio.CancelledError:  # the request went away: an agent handed over is idle
            if not waiter.cancel() and waiter.exception() is None:
                self.requeue(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if waiter.cancel():  # not handed one in time (cancel fails once it has a result)
            raise NoAgentAvailable(
                "No interpreter process is ready yet.", self.settings.retry_after_s
            )
        return waiter.result()  # an agent, or the drain's NoAgentAvailable

    def _hand_idle(self) -> None:
        """Idle agents to the waiting calls, oldest call first."""
        while self._idle and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._idle.popleft())

    def requeue(self, agent: AgentProcess) -> None:
        """A call never reached ``agent`` (idle again): first in line."""
        self._idle.appendleft(agent)
        self._idle_changed.set()
        self._hand_idle()

    # --- one agent's life ----------------------------------------------------------------
    async def _run(self, agent: AgentProcess) -> None:
        try:
            await agent.start()
        except Exception as e:
            self._agents.discard(agent)
            self._check_forkserver()  # one that died mid-fork is replaced
            self._startup_failed(f"could not fork an agent: {e!r}")
            return
        assert agent.forked_at is not None
        self.forkserver.forked(agent.forked_at)
        await agent.serve(self)
        was = agent.closed()
        died_starting = was is AgentState.STARTING and not self.draining
        if agent in self._idle:
            self._idle.remove(agent)
        self.events.agent_exited(agent, was)
        self._agents.discard(agent)
        code = await agent.reap()
        if died_starting:
            self._startup_failed(f"agent {agent.pid} exited during start (exit code {code})")
        self.top_up()

    # The pool is its agents' listener (``AgentProcess.serve``): readiness is its own
    # business first; the rest is its owner's.
    def agent_ready(self, agent: AgentProcess) -> None:
        assert agent.ready_ms is not None
        self.refill_ms.append(agent.ready_ms)
        self._startup_failures = 0
        self._idle.append(agent)
        self._idle_changed.set()
        self._hand_idle()
        self.events.agent_ready(agent)

    def agent_to_page(self, agent: AgentProcess, msg: dict[str, Any]) -> None:
        self.events.agent_to_page(agent, msg)

    def agent_room_audio(self, agent: AgentProcess, audio: RoomAudio) -> None:
        self.events.agent_room_audio(agent, audio)

    def _startup_failed(self, what: str) -> None:
        self._startup_failures += 1
        delay = FORK_BACKOFF.delay(self._startup_failures)
        self._backoff_until = time.monotonic() + delay
        log.error("%s; next fork in %.1f s", what, delay)

    def _count_kill(self, why: str) -> None:
        self.killed[why] = self.killed.get(why, 0) + 1
        metrics.AGENTS_KILLED.labels(why).inc()

    # --- supervision ---------------------------------------------------------------------
    async def _judge_loop(self) -> None:
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
        """Judge each agent by its vitals and act on the verdict; then replace a lost
        forkserver and fork what the pool lacks (after any back-off)."""
        self._check_forkserver()
        for agent in list(self._agents):
            if agent.state is AgentState.GONE:
                continue
            vitals = agent.vitals(now, trust_beats, self.forkserver.warm_since)
            verdict = judge(self._limits, vitals)
            if verdict is None:
                continue
            if verdict.action == "end":
                log.warning(
                    "call %s outlived max_call_s + grace; the worker ends it", agent.call_id
                )
                agent.request_end(verdict.reason)
            elif verdict.action == "kill":
                why = verdict.reason
                log.warning("agent %s (%s): %s; killing it", agent.pid, vitals.state, why)
                if agent in self._idle:  # no call may take it before its exit is seen
                    self._idle.remove(agent)
                agent.kill_for(why)
            elif verdict.action == "kill_forkserver":
                self.forkserver.kill(verdict.reason)
        self.top_up()

    def _check_forkserver(self) -> None:
        if self.forkserver.check() and not self.draining:
            self.spawn(self.forkserver.restart())

    # --- drain ---------------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> None:
        """Stop taking calls, let running calls finish (up to timeout_s), then stop all."""
        self.draining = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    NoAgentAvailable("This node is draining.", self.settings.retry_after_s)
                )
        while self._idle:
            self._idle.popleft().stop()
        for agent in list(self._agents):
            if agent.state is AgentState.STARTING:
                agent.stop()
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline and not self.force_stop:
            await asyncio.sleep(0.2)
        for agent in list(self._agents):
            if agent.state in (AgentState.RESERVED, AgentState.ACTIVE):
                agent.request_end("draining")
        deadline = time.monotonic() + EXIT_GRACE_S + 1
        while self._agents and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for agent in list(self._agents):
            agent.kill("drain_timeout")
        for task in list(self._tasks):
            task.cancel()
