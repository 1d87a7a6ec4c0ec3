"""The media plane against a real ``dragoman serve``: Janus per node bridging each caller
to its agent over plain RTP, its supervision, and the per-call control channel."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
import websockets
from conftest import Server, start_server, stop_server, wait_until

from dragoman.bench.caller import AUDIBLE_RMS, Caller

SLOTS = 2


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: these tests kill its Janus and its agents."""
    srv = start_server(
        tmp_path_factory.mktemp("media"),
        DRAGOMAN_MAX_CALLS=str(SLOTS),
        DRAGOMAN_CONNECT_TIMEOUT_S="3",
        DRAGOMAN_NO_MEDIA_TIMEOUT_S="10",
        DRAGOMAN_DRAIN_TIMEOUT_S="3",
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


def janus_process(server: Server) -> psutil.Process:
    found = [
        p for p in psutil.Process(server.proc.pid).children(recursive=True) if p.name() == "janus"
    ]
    assert len(found) == 1, found
    return found[0]


def media(server: Server) -> dict:
    return server.health()["media"]


def settled(server: Server) -> dict | bool:
    """Idle pool full, no call, and Janus holds exactly one handle per idle agent."""
    h = server.health()
    ok = (
        h["media"]["up"]
        and h["active_calls"] == 0
        and h["idle_agents"] == SLOTS
        and h["media"]["janus_handles"] == SLOTS
    )
    return h if ok else False


def audio_candidates(sdp: str) -> tuple[list[dict], bool]:
    """The ICE candidates of an SDP's audio section (RFC 8839 ``candidate-attribute``
    fields), and whether the section says there are no more (``a=end-of-candidates``)."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line.strip())
    [audio] = [sec for sec in sections[1:] if sec[0].startswith("m=audio ")]
    found = []
    for line in audio:
        if not line.startswith("a=candidate:"):
            continue
        foundation, component, transport, priority, address, port, typ, kind, *_ = line[
            len("a=candidate:") :
        ].split()
        assert foundation and typ == "typ", line
        found.append(
            {
                "component": int(component),
                "transport": transport.lower(),
                "priority": int(priority),
                "address": ipaddress.ip_address(address),
                "port": int(port),
                "type": kind,
            }
        )
    return found, "a=end-of-candidates" in audio


async def connected_call(server: Server) -> Caller:
    caller = Caller(server.url, source="ja", target="en")
    result = await caller.call()
    assert result.status == 201, result.error
    await caller.wait_for(lambda m: m.get("state") == "listening", 10)
    return caller


async def test_answer_comes_from_janus_and_the_agent_speaks_plain_rtp(
    media_server: Server,
) -> None:
    caller = await connected_call(media_server)
    try:
        timings = caller.result.server_timings
        assert "gateway_offer" in timings and "agent_accept" in timings
        # Janus' candidate and end-of-candidates are in the answer: no trickle needed. The
        # candidate is a UDP host address on a port Janus itself holds open.
        assert caller.result.answer_sdp is not None
        candidates, complete = audio_candidates(caller.result.answer_sdp)
        assert candidates and complete, caller.result.answer_sdp
        janus_ports = {
            c.laddr.port for c in janus_process(media_server).net_connections(kind="udp")
        }
        rtp = [c for c in candidates if c["component"] == 1 and c["transport"] == "udp"]
        assert any(c["type"] == "host" and c["port"] in janus_ports for c in rtp), (
            candidates,
            janus_ports,
        )
        # The chime reaches the caller through Janus.
        deadline = time.monotonic() + 5
        while caller.result.first_audio_ms is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert caller.result.first_audio_ms is not None
        assert max(caller.result.audio_rms) > AUDIBLE_RMS
        # The agent process holds no WebRTC stack: its sockets are loopback UDP only.
        [pid] = media_server.health()["call_pids"]
        agent = psutil.Process(pid)
        conns = agent.net_connections(kind="inet")
        assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns), conns
    finally:
        await caller.close()
    wait_until(lambda: settled(media_server), 15, what="the call's handle freed")


async def test_janus_killed_ends_calls_with_media_lost_and_the_node_recovers(
    media_server: Server,
) -> None:
    wait_until(lambda: settled(media_server), 15, what="a settled node")
    caller = await connected_call(media_server)
    try:
        h0 = media_server.health()
        restarts = h0["media"]["restarts"]
        mark = caller.mark()
        os.kill(janus_process(media_server).pid, signal.SIGKILL)
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=mark)
        assert ended["reason"] == "media_lost" and ended["message"]
    finally:
        await caller.close()
    h = wait_until(lambda: settled(media_server), 20, what="Janus restarted, node ready")
    assert h["media"]["restarts"] == restarts + 1
    assert h["outcomes"].get("media_lost", 0) == h0["outcomes"].get("media_lost", 0) + 1
    again = await connected_call(media_server)  # the node takes calls again
    await again.close()


async def test_janus_that_stops_answering_is_replaced(media_server: Server) -> None:
    h0 = wait_until(lambda: settled(media_server), 20, what="a settled node")
    janus = janus_process(media_server)
    janus.suspend()  # SIGSTOP: alive, but deaf
    try:
        h = wait_until(
            lambda: (h := settled(media_server)) and h["media"]["pid"] != janus.pid and h,
            20,
            what="the hang detected and a new Janus up",
        )
    finally:
        if janus.is_running():
            janus.resume()
    assert h["media"]["restarts"] == h0["media"]["restarts"] + 1
    assert "stopped answering" in h["media"]["last_down_reason"]
    assert not janus.is_running() or janus.status() == psutil.STATUS_ZOMBIE


async def test_a_caller_that_never_completes_ice_is_cleaned_up(media_server: Server) -> None:
    h0 = wait_until(lambda: settled(media_server), 20, what="a settled node")
    caller = Caller(media_server.url)
    caller.pc.addTransceiver(caller.mic, direction="sendrecv")
    await caller.pc.setLocalDescription(await caller.pc.createOffer())
    body = {"sdp": caller.pc.localDescription.sdp, "type": "offer", "source": "ja", "target": "en"}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{media_server.url}/v1/calls", json=body)
    assert r.status_code == 201
    await caller.pc.close()  # the answer is never applied: no ICE, no DTLS
    h = wait_until(lambda: settled(media_server), 15, what="handle and agent freed")
    assert h["outcomes"].get("connect_timeout", 0) == h0["outcomes"].get("connect_timeout", 0) + 1
    assert sum(h["outcomes"].values()) == sum(h0["outcomes"].values()) + 1


async def test_an_agent_that_dies_mid_call_frees_its_handle_and_hangs_up_the_caller(
    media_server: Server,
) -> None:
    wait_until(lambda: settled(media_server), 20, what="a settled node")
    caller = await connected_call(media_server)
    try:
        [pid] = media_server.health()["call_pids"]
        mark = caller.mark()
        os.kill(pid, signal.SIGKILL)
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=mark)
        assert ended["reason"] == "agent_lost"
        # Janus detached the handle: it closed the caller's DTLS session.
        deadline = time.monotonic() + 10
        while caller.pc.connectionState not in ("closed", "failed"):
            assert time.monotonic() < deadline, caller.pc.connectionState
            await asyncio.sleep(0.1)
    finally:
        await caller.close()
    wait_until(lambda: settled(media_server), 15, what="handle freed, pool refilled")


async def test_control_channel_needs_the_calls_token_and_survives_a_reconnect(
    media_server: Server,
) -> None:
    wait_until(lambda: settled(media_server), 20, what="a settled node")
    caller = await connected_call(media_server)
    try:
        ws_base = "ws" + media_server.url.removeprefix("http")
        path = caller.result.control_url
        for query, code in (("", 4401), ("?token=wrong", 4401)):
            async with websockets.connect(f"{ws_base}{path}{query}") as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == code
        async with websockets.connect(
            f"{ws_base}/v1/calls/unknown/control?token={caller.result.control_token}"
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4404

        # The page's socket drops; it reconnects and the call goes on.
        await caller.open_control()
        mark = caller.mark()
        snapshot = await caller.wait_for(lambda m: m.get("type") == "languages", 5, since=mark)
        assert snapshot["source"] == "ja"
        caller.send({"v": 1, "type": "set_languages", "source": "ko", "target": "en"})
        ack = await caller.wait_for(
            lambda m: m.get("type") == "languages" and m["source"] == "ko", 5, since=mark
        )
        assert ack["target"] == "en"
        caller.send({"v": 1, "type": "bogus"})
        err = await caller.wait_for(lambda m: m.get("type") == "error", 5, since=mark)
        assert err["code"] == "bad_message"
        caller.send({"v": 1, "type": "hangup"})
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 5, since=mark)
        assert ended["reason"] == "hangup"
        wait_until(lambda: caller.result.control_close is not None, 5, what="control closed")
        assert caller.result.control_close[0] == 1000
    finally:
        await caller.close()
