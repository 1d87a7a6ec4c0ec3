"""The control plane against a real ``dragoman serve``: every bad input, capacity, leaks."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from conftest import Server, wait_until

from dragoman.bench.caller import Caller


def post(server: Server, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/calls", json=body, timeout=15, **kw)


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert err["message"]
    return err


async def real_offer() -> tuple[Caller, str]:
    caller = Caller("http://unused")
    caller.pc.addTransceiver(caller.mic, direction="sendrecv")
    await caller.pc.setLocalDescription(await caller.pc.createOffer())
    return caller, caller.pc.localDescription.sdp


def test_languages_and_health(server: Server) -> None:
    langs = httpx.get(f"{server.url}/v1/languages").json()
    assert langs["default_source"] == "ja" and langs["default_target"] == "en"
    assert any(t["code"] == "en" and t["available"] for t in langs["targets"])
    # Which interpretations each provider offers, and what a call gets when it names none.
    assert langs["interpretation_defaults"]["one_way"] == "simultaneous"
    assert langs["interpretation_defaults"]["conversation"] == "consecutive"
    by_name = {p["name"]: p for p in langs["providers"]}
    assert by_name["local"]["interpretations"] == ["simultaneous", "consecutive"]
    assert by_name["openai-translate"]["interpretations"] == ["simultaneous"]
    health = server.health()
    assert health["status"] == "ok" and health["capacity"] == 3 and health["idle_target"] == 3
    # The server is shared by the session: an earlier test's call may still be ending and its
    # replacement forking, so the pool is full again shortly, not necessarily at this instant.
    wait_until(lambda: server.health()["idle_agents"] == 3, 30, what="a full idle pool")
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and 'id="call"' in page.text


async def test_bad_inputs_get_clear_errors_and_cost_nothing(server: Server) -> None:
    caller, sdp = await real_offer()
    try:
        good = {"sdp": sdp, "type": "offer", "source": "ja", "target": "en"}
        before = {p.pid for p in server.agent_processes()}
        r = httpx.post(
            f"{server.url}/v1/calls",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert_error(r, 400, "bad_json")
        assert_error(post(server, {**good, "type": "answer"}), 400, "bad_request")
        no_sdp = {k: v for k, v in good.items() if k != "sdp"}
        assert_error(post(server, no_sdp), 400, "bad_request")
        assert_error(post(server, {**good, "source": "xx"}), 400, "unknown_language")
        err = assert_error(post(server, {**good, "target": "ko"}), 400, "unsupported_pair")
        assert "Korean" in err["message"]
        assert_error(post(server, {**good, "target": "ja"}), 400, "same_language")
        err = assert_error(
            post(server, {**good, "interpretation": "eventual"}), 400, "bad_interpretation"
        )
        assert "'simultaneous' or 'consecutive'" in err["message"]
        assert_error(post(server, {**good, "interpretation": 1}), 400, "bad_request")
        two = {**good, "mode": "conversation", "interpretation": "simultaneous"}
        assert_error(post(server, two), 400, "unsupported_interpretation")
        assert_error(post(server, {**good, "sdp": "hello"}), 400, "bad_sdp")
        big = {**good, "sdp": good["sdp"] + "a=x:" + "y" * 70_000 + "\r\n"}
        assert_error(post(server, big), 413, "body_too_large")
        assert_error(httpx.delete(f"{server.url}/v1/calls/nope"), 404, "unknown_call")
        assert_error(httpx.get(f"{server.url}/v1/nothing"), 404, "not_found")
        # A cross-site form posts text/plain: a valid offer sent that way starts nothing.
        plain = {"Content-Type": "text/plain"}
        r = httpx.post(f"{server.url}/v1/calls", content=json.dumps(good), headers=plain)
        assert_error(r, 415, "unsupported_media_type")
        r = httpx.post(f"{server.url}/v1/calls/direct", data={"source": "ja", "target": "en"})
        assert_error(r, 415, "unsupported_media_type")
        # What only an attacker sends is refused before Janus or an agent sees it.
        audio = sdp[sdp.index("m=audio") :]
        many = sdp + audio * 3
        assert (
            "4 'audio' media"
            in assert_error(post(server, {**good, "sdp": many}), 400, "bad_sdp")["message"]
        )
        flood = sdp + "a=candidate:9 1 udp 1 192.0.2.9 9 typ host\r\n" * 100
        assert_error(post(server, {**good, "sdp": flood}), 400, "bad_sdp")
        # None of that reached an agent: the same idle processes are still waiting.
        assert {p.pid for p in server.agent_processes()} == before

        # Offers that pass the quick structural check but cannot be bridged — no Opus, or an
        # SDP only Janus can tell is broken — are refused with bad_sdp and cost no agent:
        # the same idle processes are still waiting.
        no_opus = sdp.replace("opus/48000/2", "speex/16000")
        assert (
            "Opus"
            in assert_error(post(server, {**good, "sdp": no_opus}), 400, "bad_sdp")["message"]
        )
        broken = re.sub(r"m=audio \d+", "m=audio nine", sdp)  # Janus' parser refuses it
        err = assert_error(post(server, {**good, "sdp": broken}), 400, "bad_sdp")
        assert "m=" in err["message"]
        assert {p.pid for p in server.agent_processes()} == before
        h = server.health()
        assert h["idle_agents"] == 3 and h["active_calls"] == 0
    finally:
        await caller.close()


def quiet(server: Server) -> dict | bool:
    """No call on the node and the idle pool full: every earlier call's outcome is counted,
    so a snapshot of the (session-long) counters taken now moves only with the next step."""
    h = server.health()
    return h if h["active_calls"] == 0 and h["idle_agents"] == h["idle_target"] else False


def outcome(h: dict, *reasons: str) -> int:
    return sum(h["outcomes"].get(r, 0) for r in reasons)


async def test_full_node_answers_503_with_retry_after_and_recovers(server: Server) -> None:
    h0 = wait_until(lambda: quiet(server), 30, what="a quiet node")
    callers = [Caller(server.url) for _ in range(3)]
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            results = await asyncio.gather(*(c.call(client) for c in callers))
        assert [r.status for r in results] == [201, 201, 201]
        assert len({r.call_id for r in results}) == 3
        extra = Caller(server.url)
        r = await extra.call()
        await extra.close()
        assert r.status == 503 and r.error and r.error["code"] == "no_agent"
        assert r.retry_after and int(r.retry_after) >= 1
        for res in results:
            d = httpx.delete(f"{server.url}/v1/calls/{res.call_id}", timeout=5)
            assert d.status_code == 204
    finally:
        for c in callers:
            await c.close()
    h = wait_until(
        lambda: (h := server.health())["active_calls"] == 0 and h["idle_agents"] == 3 and h,
        20,
        what="all calls ended and pool refilled",
    )
    # Exactly the three DELETEd calls, counted once each (the 503 started none).
    assert outcome(h, "remote_hangup") == outcome(h0, "remote_hangup") + 3
    assert h["calls_total"] == h0["calls_total"] + 3
    wait_until(lambda: len(server.agent_processes()) == 3, 10, what="no leaked agent process")


async def test_abandoned_call_frees_its_process(server: Server) -> None:
    """A browser that posts an offer and vanishes before ICE must not hold a process."""
    h0 = wait_until(lambda: quiet(server), 30, what="a quiet node")
    abandoned = ("connect_timeout", "disconnected")
    caller = Caller(server.url)
    result = await caller.call()
    assert result.status == 201
    await caller.pc.close()  # gone before any media flowed
    wait_until(
        lambda: outcome(server.health(), *abandoned) > outcome(h0, *abandoned),
        20,
        what="abandoned call ended by the agent",
    )
    h = wait_until(
        lambda: (h := quiet(server)) and len(server.agent_processes()) == 3 and h,
        15,
        what="abandoned call's process gone and replaced",
    )
    # This one call, ended once, for one of those reasons and no other.
    assert outcome(h, *abandoned) == outcome(h0, *abandoned) + 1
    assert sum(h["outcomes"].values()) == sum(h0["outcomes"].values()) + 1


@pytest.mark.parametrize(
    ("path", "allowed"), [("/v1/calls", "POST"), ("/v1/languages", "GET"), ("/", "GET")]
)
def test_wrong_method_is_json_and_says_what_is_allowed(
    server: Server, path: str, allowed: str
) -> None:
    r = httpx.put(server.url + path)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert allowed in r.headers["allow"].split(", "), r.headers  # RFC 9110: 405 names them


OPERATOR_PATHS = ("/healthz", "/metrics", "/v1/fleet/autoscale")


def test_operator_routes_answer_only_on_the_internal_port(server: Server) -> None:
    """The public port serves the page and the public API; probes, Prometheus and KEDA read
    the internal one, and each port's OpenAPI document lists only what it serves."""
    for path in OPERATOR_PATHS:
        assert_error(httpx.get(server.url + path, timeout=5), 404, "not_found")
        assert httpx.get(server.internal_url + path, timeout=5).status_code == 200, path
    metrics = httpx.get(server.internal_url + "/metrics", timeout=5)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "dragoman_api_calls_total" in metrics.text
    for path in ("/", "/v1/languages", "/docs"):
        assert_error(httpx.get(server.internal_url + path, timeout=5), 404, "not_found")
    public = httpx.get(server.url + "/openapi.json", timeout=5).json()["paths"]
    internal = httpx.get(server.internal_url + "/openapi.json", timeout=5).json()["paths"]
    assert set(internal) == set(OPERATOR_PATHS)
    assert "/v1/calls" in public and not set(public) & set(OPERATOR_PATHS)
    assert "text/plain" in internal["/metrics"]["get"]["responses"]["200"]["content"]
