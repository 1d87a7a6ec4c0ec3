"""What the worker does about each agent process, as a pure decision over plain numbers.

Modelled on supervised process pools (LiveKit's agents: ping, init timeout, kill backstop):
an agent proves its event loop runs by a heartbeat on its pipe; one that falls silent (a
stuck loop, SIGSTOP), never becomes ready, ignores an end request, outgrows its memory or
holds a call past its maximum duration is acted on by the worker, not trusted to act
itself. Each ``worker.agents.agent_process.AgentProcess`` gathers its ``AgentVitals``; the pool's
supervision loop judges them and carries out the ``Verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dragoman.config import Settings

EXIT_GRACE_S = 5.0  # after "end", how long an agent may take to leave before it is killed

Action = Literal["kill", "end", "kill_forkserver"]


@dataclass(frozen=True)
class SupervisionLimits:
    heartbeat_timeout_s: float
    start_timeout_s: float
    max_call_s: float  # the worker's own cap: the agent's limit plus a grace
    max_call_grace_s: float
    exit_grace_s: float
    memory_hard_limit_bytes: int

    @classmethod
    def from_settings(cls, s: Settings) -> SupervisionLimits:
        if s.agent_heartbeat_timeout_s < 2 * s.agent_heartbeat_s:
            # One late beat (a GC pause, a busy core) must not cost a call.
            raise ValueError("agent_heartbeat_timeout_s must be at least 2 × agent_heartbeat_s")
        return cls(
            heartbeat_timeout_s=s.agent_heartbeat_timeout_s,
            start_timeout_s=s.agent_start_timeout_s,
            max_call_s=s.max_call_s + s.max_call_grace_s,
            max_call_grace_s=s.max_call_grace_s,
            exit_grace_s=EXIT_GRACE_S,
            # The agent ends its call at call_memory_limit_mb; this is the backstop.
            memory_hard_limit_bytes=int(s.call_memory_limit_mb * 1.25 * 2**20),
        )


@dataclass(frozen=True)
class AgentVitals:
    now: float  # time.monotonic()
    state: str  # an AgentState's value: starting | idle | reserved | active | ending
    fork_requested_at: float
    forked_at: float | None  # Process.start() returned (None: still waiting on the forkserver)
    last_seen: float  # the last message (heartbeat or any other) from its pipe
    call_started_at: float | None = None  # the agent accepted its call
    call_cap_s: float | None = None  # this call's own max_call_s (a ticket's), if lower
    ending_since: float | None = None  # the worker asked it to end
    rss_bytes: int | None = None
    # When the forkserver first forked since it was (re)started, i.e. finished its preload;
    # None while it is still preloading.
    forkserver_warm_since: float | None = 0.0


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str  # for a call: the end reason the page is given


def judge(limits: SupervisionLimits, v: AgentVitals) -> Verdict | None:
    """What to do about one agent now, or None."""
    if v.state == "starting":
        if v.forked_at is None:
            # A warm forkserver forks in milliseconds; one that keeps a fork waiting this
            # long is stuck. A cold one is still importing (the first start) and is let be,
            # and forks queued behind its preload count from when it was done.
            if v.forkserver_warm_since is None:
                return None
            waiting_since = max(v.fork_requested_at, v.forkserver_warm_since)
            if v.now - waiting_since > limits.start_timeout_s:
                return Verdict("kill_forkserver", "forkserver_stuck")
            return None
        # Counted from the fork, so the first start's wait for the preload is not held
        # against it; no heartbeat judgement before it is ready (its start is bounded here).
        if v.now - v.forked_at > limits.start_timeout_s:
            return Verdict("kill", "start_timeout")
        return None
    if v.now - v.last_seen > limits.heartbeat_timeout_s:
        return Verdict("kill", "agent_unresponsive")
    if v.rss_bytes is not None and v.rss_bytes > limits.memory_hard_limit_bytes:
        return Verdict("kill", "memory_limit")
    if v.state == "ending":
        if v.ending_since is not None and v.now - v.ending_since > limits.exit_grace_s:
            return Verdict("kill", "end_ignored")
        return None
    cap = limits.max_call_s
    if v.call_cap_s is not None:
        cap = min(cap, v.call_cap_s + limits.max_call_grace_s)
    if v.state == "active" and v.call_started_at is not None and v.now - v.call_started_at > cap:
        return Verdict("end", "max_duration")
    return None


def beats_trustworthy(tick_gap_s: float, period_s: float, heartbeat_timeout_s: float) -> bool:
    """False when the worker's own loop was stalled long enough that every agent looks
    silent: their beats are waiting unread in the pipes, so none is judged this tick."""
    return tick_gap_s - period_s < heartbeat_timeout_s / 2
