"""Calls waiting for an agent being forked (``worker/agents/pool.py``): each has its own fork
under way at once, they are served in arrival order, and one that gives up or is cancelled
loses no agent. The forks are simulated (the pool's own queueing is what is tested)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dragoman.config import Settings
from dragoman.contract.errors import NoAgentAvailable
from dragoman.worker.agents import pool as pool_mod
from dragoman.worker.agents.agent_process import AgentState


class FakeAgent:
    """What the pool's queueing touches of an ``AgentProcess``: its state and readiness."""

    def __init__(self, *_: Any) -> None:
        self.state = AgentState.STARTING
        self.ready_ms: float | None = None
        self.started = asyncio.Event()  # set by the test: "the fork finished"

    def stop(self) -> None:
        self.state = AgentState.ENDING

    def kill(self, why: str) -> None:
        self.state = AgentState.ENDING


class Events:
    def agent_ready(self, agent: Any) -> None: ...
    def agent_to_page(self, agent: Any, msg: Any) -> None: ...
    def agent_room_audio(self, agent: Any, audio: Any) -> None: ...
    def agent_exited(self, agent: Any, was: Any) -> None: ...


class Pool(pool_mod.AgentPool):
    """An AgentPool whose forks finish when the test says so."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "/nonexistent", Events())
        self.forked: list[FakeAgent] = []

    async def _run(self, agent: Any) -> None:  # type: ignore[override]
        self.forked.append(agent)
        await agent.started.wait()
        agent.state = AgentState.IDLE
        agent.ready_ms = 1.0
        self.agent_ready(agent)

    async def finish(self, n: int) -> None:
        """The next ``n`` forks still starting become ready, in fork order."""
        await _settle()  # the forks' tasks have begun
        for agent in [a for a in self.forked if a.state is AgentState.STARTING][:n]:
            agent.started.set()


@pytest.fixture
def make_pool(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(pool_mod, "AgentProcess", FakeAgent)

    def make(**kw: Any) -> Pool:
        return Pool(Settings(**{"max_calls": 10, "agent_wait_s": 2.0, **kw}))

    return make


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_waiting_call_has_its_own_fork_under_way_at_once(make_pool: Any) -> None:
    # A buffer of 1, taken: 3 calls arrive together. Before the fix the pool forked only up
    # to its idle target (1 fork), so the 2nd and 3rd calls waited for a second round.
    pool = make_pool(idle_target=1)
    pool.top_up()
    await pool.finish(1)
    await _settle()
    first = await pool.take_idle()
    first.state = AgentState.RESERVED
    waits = [asyncio.create_task(pool.take_idle()) for _ in range(3)]
    await _settle()
    assert pool.starting == 1 + 3  # the buffer's replacement + one for each waiting call
    await pool.finish(4)
    got = await asyncio.gather(*waits)
    assert len({id(a) for a in got}) == 3


async def test_waiting_calls_are_served_in_arrival_order(make_pool: Any) -> None:
    pool = make_pool(idle_target=0)
    early = asyncio.create_task(pool.take_idle())
    await _settle()
    await pool.finish(1)  # the early call's agent is ready ...
    late = asyncio.create_task(pool.take_idle())  # ... as a later call arrives
    await _settle()
    assert early.done() and not late.done()
    agent = early.result()
    assert agent is pool.forked[0]
    await pool.finish(1)
    assert await late is pool.forked[1]


async def test_a_call_that_gives_up_loses_no_agent(make_pool: Any) -> None:
    pool = make_pool(idle_target=0, agent_wait_s=0.05)
    with pytest.raises(NoAgentAvailable, match="ready yet"):
        await pool.take_idle()
    await pool.finish(1)  # its fork finishes after it gave up: the agent is idle, for the next call
    await _settle()
    assert pool.idle_agents() == pool.forked[:1]
    assert await pool.take_idle() is pool.forked[0]


async def test_a_cancelled_request_puts_its_agent_back(make_pool: Any) -> None:
    pool = make_pool(idle_target=0)
    wait = asyncio.create_task(pool.take_idle())
    await _settle()
    await pool.finish(1)
    await asyncio.sleep(0)  # handed over; the request is cancelled before it resumes
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    assert pool.idle_agents() == pool.forked[:1]


async def test_a_drain_answers_the_waiting_calls(make_pool: Any) -> None:
    pool = make_pool(idle_target=0)
    wait = asyncio.create_task(pool.take_idle())
    await _settle()
    drain = asyncio.create_task(pool.drain(0.1))
    with pytest.raises(NoAgentAvailable, match="draining"):
        await wait
    drain.cancel()  # (the rest of a drain waits for processes that these fakes do not have)
