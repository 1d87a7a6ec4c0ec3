"""Supervised processes: the worker's policy over its agents (pure), forkserver recovery, and
against a real ``dragoman serve``: a stopped agent is killed and its call ended with a
reason, an idle one is replaced, the inference service is restarted (the node not ready
meanwhile, the page told), losing the forkserver cuts no call, and a call's maximum duration:
the agent's own limit, and the worker's cap with the agent's limit switched off."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import JA_KEYWORD, Server, final_caption, start_server, stop_server, wait_until

from dragoman.bench.caller import Caller, load_wav_mono
from dragoman.config import Settings
from dragoman.worker.agents.agent_process import alive
from dragoman.worker.agents.forkserver import reset_dead_forkserver
from dragoman.worker.agents.vitals import (
    AgentVitals,
    SupervisionLimits,
    Verdict,
    beats_trustworthy,
    judge,
)

# --- the policy ---------------------------------------------------------------------------
LIMITS = SupervisionLimits(
    heartbeat_timeout_s=5,
    start_timeout_s=30,
    max_call_s=70,
    max_call_grace_s=10,
    exit_grace_s=5,
    memory_hard_limit_bytes=500 << 20,
)


def vitals(**kw: object) -> AgentVitals:
    base: dict[str, object] = dict(
        now=100.0,
        state="active",
        fork_requested_at=0.0,
        forked_at=0.1,
        last_seen=99.5,
        call_started_at=50.0,
        rss_bytes=100 << 20,
    )
    base.update(kw)
    return AgentVitals(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "verdict"),
    [
        ({}, None),
        # Silent longer than the heartbeat timeout, whatever it was doing.
        ({"last_seen": 94.9}, Verdict("kill", "agent_unresponsive")),
        ({"last_seen": 95.1}, None),
        (
            {"state": "idle", "call_started_at": None, "last_seen": 90.0},
            Verdict("kill", "agent_unresponsive"),
        ),
        ({"state": "reserved", "last_seen": 90.0}, Verdict("kill", "agent_unresponsive")),
        ({"rss_bytes": 501 << 20}, Verdict("kill", "memory_limit")),
        # The worker's own cap on a call, beyond the agent's max_call_s + grace.
        ({"call_started_at": 29.9}, Verdict("end", "max_duration")),
        ({"call_started_at": 30.1}, None),
        # A ticket's lower cap for this call: its own cap plus the grace.
        ({"call_started_at": 69.9, "call_cap_s": 20}, Verdict("end", "max_duration")),
        ({"call_started_at": 70.1, "call_cap_s": 20}, None),
        ({"call_started_at": 29.9, "call_cap_s": 600}, Verdict("end", "max_duration")),
        # Ending: asked once; killed when it ignores the request past the grace.
        ({"state": "ending", "call_started_at": 0.0, "ending_since": 96.0}, None),
        ({"state": "ending", "ending_since": 94.9}, Verdict("kill", "end_ignored")),
        # Starting: the deadline counts from the fork, not from the request (the first fork
        # waits for the forkserver's preload), and no heartbeat is asked of it yet.
        (
            {
                "state": "starting",
                "fork_requested_at": 0.0,
                "forked_at": 70.1,
                "last_seen": 70.1,
                "call_started_at": None,
            },
            None,
        ),
        (
            {"state": "starting", "forked_at": 69.9, "last_seen": 69.9, "call_started_at": None},
            Verdict("kill", "start_timeout"),
        ),
        (
            {
                "state": "starting",
                "forked_at": None,
                "fork_requested_at": 0.0,
                "call_started_at": None,
                "forkserver_warm_since": None,
            },
            None,
        ),
        (  # queued behind a long preload: counted from when the forkserver was ready
            {
                "state": "starting",
                "forked_at": None,
                "fork_requested_at": 0.0,
                "call_started_at": None,
                "forkserver_warm_since": 80.0,
            },
            None,
        ),
        (
            {
                "state": "starting",
                "forked_at": None,
                "fork_requested_at": 0.0,
                "call_started_at": None,
                "forkserver_warm_since": 69.0,
            },
            Verdict("kill_forkserver", "forkserver_stuck"),
        ),
        (
            {
                "state": "starting",
                "forked_at": None,
                "fork_requested_at": 69.0,
                "call_started_at": None,
            },
            Verdict("kill_forkserver", "forkserver_stuck"),
        ),
        (
            {
                "state": "starting",
                "forked_at": None,
                "fork_requested_at": 71.0,
                "call_started_at": None,
            },
            None,
        ),
    ],
)
def test_judge(kw: dict, verdict: Verdict | None) -> None:
    assert judge(LIMITS, vitals(**kw)) == verdict


def test_beats_are_not_judged_after_the_worker_itself_stalled() -> None:
    assert beats_trustworthy(1.02, 1.0, 5.0)
    assert beats_trustworthy(3.0, 1.0, 5.0)
    assert not beats_trustworthy(4.0, 1.0, 5.0)


def test_limits_from_settings() -> None:
    s = Settings(max_call_s=60, max_call_grace_s=10, call_memory_limit_mb=400)
    limits = SupervisionLimits.from_settings(s)
    assert limits.max_call_s == 70
    assert limits.memory_hard_limit_bytes == 500 * 2**20
    with pytest.raises(ValueError, match="agent_heartbeat_timeout_s"):
        SupervisionLimits.from_settings(
            Settings(agent_heartbeat_s=1.0, agent_heartbeat_timeout_s=1.5)
        )


def _sleep_forever() -> None:
    time.sleep(60)


def test_a_lost_forkserver_is_reset_and_its_children_stay_killable() -> None:
    """The reviewer's bug in miniature: once the forkserver is gone, ``Process.is_alive()``
    says False for a child that still runs; psutil does not, and the next fork works."""
    fs = multiprocessing.forkserver._forkserver
    saved = fs._preload_modules
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([])
    children: list[psutil.Process] = []
    try:
        first = ctx.Process(target=_sleep_forever, daemon=True)
        first.start()
        child = psutil.Process(first.pid)
        children.append(child)
        server_pid = fs._forkserver_pid
        assert server_pid is not None and reset_dead_forkserver() is False  # it is alive
        os.kill(server_pid, signal.SIGKILL)
        wait_until(lambda: not first.is_alive(), 5, what="multiprocessing to lose track")
        assert alive(child)  # ...while the child runs on
        assert reset_dead_forkserver() is True
        assert fs._forkserver_pid is None
        second = ctx.Process(target=_sleep_forever, daemon=True)
        second.start()  # a new forkserver
        children.append(psutil.Process(second.pid))
        assert fs._forkserver_pid not in (None, server_pid)
        child.kill()
        wait_until(lambda: not alive(child), 5, what="the orphan to die")
    finally:
        for p in children:
            if alive(p):
                p.kill()
        fs._stop()
        fs._preload_modules = saved


# --- against a real server ---------------------------------------------------------------
SLOTS = 2
MAX_CALL_S = 15  # every call below ends well before it, except the two that test it
GRACE_S = 4  # the worker's cap: MAX_CALL_S + GRACE_S, well clear of the agent's
# A fault the last test switches on: the agents' own max-duration limit never fires.
AGENT_LIMIT_OFF = Path(__file__).resolve().parent / "agent_limit_off"
HEARTBEAT_TIMEOUT_S = 3
START_TIMEOUT_S = 5
PROBE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def sup_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: these tests stop and kill its processes."""
    tmp = tmp_path_factory.mktemp("supervision")
    srv = start_server(
        tmp,
        DRAGOMAN_MAX_CALLS=str(SLOTS),
        DRAGOMAN_AGENT_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
        DRAGOMAN_AGENT_START_TIMEOUT_S=str(START_TIMEOUT_S),
        DRAGOMAN_MAX_CALL_S=str(MAX_CALL_S),
        DRAGOMAN_MAX_CALL_GRACE_S=str(GRACE_S),
        DRAGOMAN_INFERENCE_PROBE_INTERVAL_S="0.5",
        DRAGOMAN_INFERENCE_PROBE_TIMEOUT_S=str(PROBE_TIMEOUT_S),
        DRAGOMAN_CONNECT_TIMEOUT_S="5",
        DRAGOMAN_DRAIN_TIMEOUT_S="3",
        PYTHONPATH=os.pathsep.join(filter(None, [str(AGENT_LIMIT_OFF), os.getenv("PYTHONPATH")])),
        AGENT_MAX_DURATION_OFF=str(limit_off_flag(tmp)),
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


def limit_off_flag(folder: Path) -> Path:
    """While this file exists, the server's agents ignore their own max_call_s."""
    return folder / "agent-max-duration-off"


def gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def settled(server: Server) -> dict | bool:
    """No call, the idle pool full, one Janus handle per idle agent, inference up."""
    h = server.health()
    ok = (
        h["active_calls"] == 0
        and h["idle_agents"] == SLOTS
        and h["starting_agents"] == 0
        and h["media"]["janus_handles"] == SLOTS
        and h["inference"]["up"]
        and h["free_slots"] == SLOTS
    )
    return h if ok else False


def killed(h: dict, reason: str) -> int:
    return h["supervision"]["killed"].get(reason, 0)


async def connected_call(server: Server) -> Caller:
    caller = Caller(server.url, source="ja", target="en")
    result = await caller.call()
    assert result.status == 201, result.error
    await caller.wait_for(lambda m: m.get("state") == "listening", 10)
    return caller


async def test_a_stopped_call_agent_is_killed_and_its_call_ended(sup_server: Server) -> None:
    h0 = wait_until(lambda: settled(sup_server), 20, what="a settled node")
    caller = await connected_call(sup_server)
    try:
        [pid] = sup_server.health()["call_pids"]
        agent = psutil.Process(pid)
        mark = caller.mark()
        t0 = time.monotonic()
        agent.suspend()  # SIGSTOP: alive, holds its slot, says nothing
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=mark)
        took = time.monotonic() - t0
        assert ended["reason"] == "agent_unresponsive" and ended["message"]
        # Its last beat came at most a heartbeat before the stop; one supervision tick more.
        assert HEARTBEAT_TIMEOUT_S - 1.5 < took < HEARTBEAT_TIMEOUT_S + 5, took
        wait_until(lambda: gone(agent), 5, what="the stopped agent killed")
    finally:
        await caller.close()
    h = wait_until(lambda: settled(sup_server), 15, what="the slot freed, the pool full")
    assert killed(h, "agent_unresponsive") == killed(h0, "agent_unresponsive") + 1
    assert (
        h["outcomes"].get("agent_unresponsive", 0)
        == h0["outcomes"].get("agent_unresponsive", 0) + 1
    )
    again = await connected_call(sup_server)  # the slot takes a call again
    await again.close()


async def test_a_stopped_idle_agent_is_replaced(sup_server: Server) -> None:
    h0 = wait_until(lambda: settled(sup_server), 20, what="a settled node")
    victim = sup_server.agent_processes()[0]
    victim.suspend()
    try:
        wait_until(lambda: gone(victim), HEARTBEAT_TIMEOUT_S + 4, what="the stopped agent killed")
    finally:
        if not gone(victim):
            victim.resume()
    # Replaced, and its Janus handle freed (settled counts one handle per idle agent).
    h = wait_until(lambda: settled(sup_server), 15, what="a replacement ready")
    assert killed(h, "agent_unresponsive") == killed(h0, "agent_unresponsive") + 1
    assert victim.pid not in {p.pid for p in sup_server.agent_processes()}
    assert h["outcomes"] == h0["outcomes"]  # no call was involved


async def test_inference_service_killed_is_restarted(sup_server: Server) -> None:
    h0 = wait_until(lambda: settled(sup_server), 20, what="a settled node")
    os.kill(h0["inference"]["pid"], signal.SIGKILL)
    # Not ready at once: the registry offers no slot here while it restarts.
    wait_until(
        lambda: not (h := sup_server.health())["inference"]["up"] and h["free_slots"] == 0,
        1,
        what="the node not ready",
    )
    h = wait_until(lambda: settled(sup_server), 60, what="the inference service back")
    assert h["inference"]["restarts"] == h0["inference"]["restarts"] + 1
    assert h["inference"]["pid"] != h0["inference"]["pid"]
    assert "exited with code -9" in h["inference"]["last_down_reason"]


async def test_a_hung_inference_service_is_replaced_and_its_callers_told(
    sup_server: Server, ja_speech: Path
) -> None:
    speech = load_wav_mono(ja_speech)
    h0 = wait_until(lambda: settled(sup_server), 20, what="a settled node")
    service = psutil.Process(h0["inference"]["pid"])
    caller = await connected_call(sup_server)
    try:
        mark = caller.mark()
        caller.mic.play(speech)
        # The sentence has ended and is being transcribed: the service hangs under it.
        await caller.wait_for(lambda m: m.get("state") == "translating", 20, since=mark)
        t0 = time.monotonic()
        service.suspend()
        err = await caller.wait_for(lambda m: m.get("type") == "error", 15, since=mark)
        # Told within the probe's deadline, not after the client's 30 s (nor never).
        assert time.monotonic() - t0 < PROBE_TIMEOUT_S + 3
        assert err["code"] == "inference_unavailable", err  # "repeat that", not silence
        assert not err["fatal"] and err["message"], err
        assert gone(service)
        h = sup_server.health()
        assert h["inference"]["up"] is False and h["free_slots"] == 0, h["inference"]
        assert "stopped answering" in h["inference"]["last_down_reason"]
        # READY again once it answers (one slot is this call's); the call went on.
        h = wait_until(
            lambda: (
                (h := sup_server.health())["inference"]["up"] and h["free_slots"] == SLOTS - 1 and h
            ),
            60,
            what="the inference service back, the node ready",
        )
        assert h["inference"]["restarts"] == h0["inference"]["restarts"] + 1
        assert h["active_calls"] == 1
    finally:
        if not gone(service):
            service.resume()
        await caller.close()
    # A call after the restart is translated again.
    wait_until(lambda: settled(sup_server), 15, what="a settled node")
    caller = await connected_call(sup_server)
    try:
        mark = caller.mark()
        caller.mic.play(speech)
        await caller.wait_for(final_caption("source", containing=JA_KEYWORD), 20, since=mark)
        await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["side"] == "translation" and m["text"],
            10,
            since=mark,
        )
    finally:
        await caller.close()


async def test_losing_the_forkserver_cuts_no_call_and_a_new_one_forks(
    sup_server: Server,
) -> None:
    h0 = wait_until(lambda: settled(sup_server), 20, what="a settled node")
    old_server = h0["supervision"]["forkserver_pid"]
    going_on = await connected_call(sup_server)
    [first] = sup_server.health()["call_pids"]
    stuck = await connected_call(sup_server)
    try:
        [second] = set(sup_server.health()["call_pids"]) - {first}
        agents = [psutil.Process(first), psutil.Process(second)]
        os.kill(old_server, signal.SIGKILL)
        # The worker notices, and a new forkserver is started.
        h = wait_until(
            lambda: (
                (h := sup_server.health())["supervision"]["forkserver_restarts"]
                == h0["supervision"]["forkserver_restarts"] + 1
                and h["supervision"]["forkserver_pid"] not in (None, old_server)
                and h
            ),
            5,
            what="the forkserver replaced",
        )
        new_server = psutil.Process(h["supervision"]["forkserver_pid"])
        # A running call goes on: its agent still answers the page through the worker...
        mark = going_on.mark()
        going_on.send({"v": 1, "type": "set_languages", "source": "zh", "target": "en"})
        ack = await going_on.wait_for(lambda m: m.get("type") == "languages", 5, since=mark)
        assert (ack["source"], ack["target"]) == ("zh", "en")
        # ...and the worker can still kill an orphaned agent (multiprocessing now thinks
        # every one of them is dead): the stopped one is ended as unresponsive.
        stuck_agent = agents[1]
        mark_stuck = stuck.mark()
        stuck_agent.suspend()
        ended = await stuck.wait_for(lambda m: m.get("state") == "ended", 10, since=mark_stuck)
        assert ended["reason"] == "agent_unresponsive"
        wait_until(lambda: gone(stuck_agent), 5, what="the orphaned agent killed")
        mark = going_on.mark()
        going_on.send({"v": 1, "type": "hangup"})
        ended = await going_on.wait_for(lambda m: m.get("state") == "ended", 5, since=mark)
        assert ended["reason"] == "hangup"
        wait_until(lambda: gone(agents[0]), 10, what="the hung-up call's agent to exit")
    finally:
        await going_on.close()
        await stuck.close()
    # Every agent from now on is forked by the new forkserver, and takes calls.
    h = wait_until(lambda: settled(sup_server), 30, what="the pool refilled")
    assert killed(h, "agent_unresponsive") == killed(h0, "agent_unresponsive") + 1
    assert killed(h, "exit_timeout") == killed(h0, "exit_timeout")  # the other left by itself
    callers = await asyncio.gather(connected_call(sup_server), connected_call(sup_server))
    try:
        fresh = {p.pid for p in new_server.children()}
        busy = set(sup_server.health()["call_pids"])
        assert len(busy) == 2 and busy <= fresh, (busy, fresh)
    finally:
        for c in callers:
            await c.close()


async def test_a_stuck_forkserver_is_replaced(sup_server: Server) -> None:
    """A forkserver that stops forking (SIGSTOP) would keep an agent "starting" forever."""
    h0 = wait_until(lambda: settled(sup_server), 30, what="a settled node")
    old_server = psutil.Process(h0["supervision"]["forkserver_pid"])
    old_server.suspend()
    try:
        sup_server.agent_processes()[0].kill()  # its replacement's fork now waits
        wait_until(lambda: sup_server.health()["starting_agents"] == 1, 5, what="a fork waiting")
        h = wait_until(
            lambda: (
                (h := sup_server.health())["supervision"]["forkserver_pid"]
                not in (None, old_server.pid)
                and h
            ),
            START_TIMEOUT_S + 4,
            what="the stuck forkserver replaced",
        )
        assert (
            h["supervision"]["forkserver_restarts"] == h0["supervision"]["forkserver_restarts"] + 1
        )
        wait_until(lambda: gone(old_server), 5, what="the stuck forkserver killed")
    finally:
        if not gone(old_server):
            old_server.resume()
    wait_until(lambda: settled(sup_server), 20, what="the pool refilled")


def ended_by_the_worker(server: Server, call_id: str) -> bool:
    """The worker's log says its own cap ended the call (pool supervision's warning)."""
    return any(
        call_id in line and "the worker ends it" in line
        for line in server.log_path.read_text(errors="replace").splitlines()
    )


async def test_a_call_is_ended_by_the_agent_at_its_maximum_duration(sup_server: Server) -> None:
    """The agent's own limit ends the call at max_call_s, before the worker's cap."""
    h0 = wait_until(lambda: settled(sup_server), 30, what="a settled node")
    t0 = time.monotonic()  # before the call exists: no cap can end it sooner than this
    caller = await connected_call(sup_server)
    try:
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", MAX_CALL_S + 10)
        took = time.monotonic() - t0
        assert ended["reason"] == "max_duration", ended
        assert took >= MAX_CALL_S, took
        call_id = caller.result.call_id
        assert call_id
        assert not ended_by_the_worker(sup_server, call_id), "the worker's cap ended it"
    finally:
        await caller.close()
    h = wait_until(lambda: settled(sup_server), 15, what="the slot freed")
    assert h["outcomes"].get("max_duration", 0) == h0["outcomes"].get("max_duration", 0) + 1


async def test_the_worker_ends_a_call_whose_agent_ignores_its_limit(sup_server: Server) -> None:
    """The worker's backstop: with the agent's own limit off, the call still ends, at the
    worker's cap (max_call_s + grace), by the worker."""
    h0 = wait_until(lambda: settled(sup_server), 30, what="a settled node")
    flag = limit_off_flag(sup_server.log_path.parent)
    flag.touch()
    try:
        t0 = time.monotonic()
        caller = await connected_call(sup_server)
        try:
            ended = await caller.wait_for(
                lambda m: m.get("state") == "ended", MAX_CALL_S + GRACE_S + 10
            )
            took = time.monotonic() - t0
            assert ended["reason"] == "max_duration", ended
            assert took >= MAX_CALL_S + GRACE_S, took  # not before the worker's cap
            call_id = caller.result.call_id
            assert call_id
            assert ended_by_the_worker(sup_server, call_id), sup_server.log_tail()
        finally:
            await caller.close()
    finally:
        flag.unlink()
    h = wait_until(lambda: settled(sup_server), 15, what="the slot freed")
    assert h["outcomes"].get("max_duration", 0) == h0["outcomes"].get("max_duration", 0) + 1
