"""Admission on a real ``dragoman serve`` run as in public: call tickets, request rates,
concurrent calls, control-channel and language-switch limits.

The server trusts one proxy hop, so each test speaks from its own address through
``X-Forwarded-For`` and the per-address counts of one test never leak into another.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from conftest import Server, start_server, stop_server, wait_until

from dragoman.api.tickets import mint, mint_control
from dragoman.bench.caller import Caller
from dragoman.contract.page import MAX_MESSAGE_BYTES

SECRET = "test-ticket-secret-0123456789abcdef0123456789"
RATE_PER_IP = 4
CONCURRENT_PER_IP = 2
CONTROL_PER_MINUTE = 8
SWITCHES_PER_MINUTE = 2
DIRECT_PER_HOUR = 2


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("public"),
        DRAGOMAN_MAX_CALLS="3",
        DRAGOMAN_CALL_TOKEN_SECRET=SECRET,
        DRAGOMAN_TRUSTED_PROXY_HOPS="1",
        DRAGOMAN_CALLS_PER_MINUTE_PER_IP=str(RATE_PER_IP),
        DRAGOMAN_CALLS_PER_MINUTE_PER_SUBJECT="100",
        DRAGOMAN_CONCURRENT_CALLS_PER_IP=str(CONCURRENT_PER_IP),
        DRAGOMAN_CONCURRENT_CALLS_PER_SUBJECT="1",
        DRAGOMAN_DIRECT_SESSIONS_PER_HOUR=str(DIRECT_PER_HOUR),
        DRAGOMAN_CONTROL_MESSAGES_PER_MINUTE=str(CONTROL_PER_MINUTE),
        DRAGOMAN_LANGUAGE_SWITCHES_PER_MINUTE=str(SWITCHES_PER_MINUTE),
        DRAGOMAN_CONNECT_TIMEOUT_S="6",
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()
    log = srv.log_path.read_text(errors="replace")
    assert "admission: call tickets required" in log
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]


def ticket(sub: str, **kw: object) -> str:
    return mint(SECRET, sub, kw.pop("ttl_s", 120), **kw)  # type: ignore[arg-type]


def post(server: Server, ip: str, body: object, token: str | None, path: str = "/v1/calls"):
    headers = {"X-Forwarded-For": ip}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=15)


def error_of(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    return err


def ticket_from_cli(sub: str) -> str:
    """``dragoman token``, as an operator tries the server out."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dragoman")), "token", "--sub", sub, "--ttl", "60"]
        + ["--providers", "local"],
        env={**os.environ, "DRAGOMAN_CALL_TOKEN_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def offer_sdp() -> tuple[Caller, str]:
    caller = Caller("http://unused")
    caller.pc.addTransceiver(caller.mic, direction="sendrecv")
    await caller.pc.setLocalDescription(await caller.pc.createOffer())
    return caller, caller.pc.localDescription.sdp


async def place(server: Server, ip: str, token: str, **kw: object) -> Caller:
    caller = Caller(server.url, send_audio=False, ticket=token, **kw)  # type: ignore[arg-type]
    async with httpx.AsyncClient(timeout=30, headers={"X-Forwarded-For": ip}) as client:
        await caller.call(client)
    return caller


async def test_tickets_valid_expired_forged_or_out_of_scope(public: Server) -> None:
    holder, sdp = await offer_sdp()
    body = {"sdp": sdp, "type": "offer", "source": "ja", "target": "en"}
    before = {p.pid for p in public.agent_processes()}
    forged = mint("another-secret-of-at-least-32-bytes-xxxxxxxx", "mallory", 60)
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, "none")
    refused = [
        (None, 401, "ticket_required"),
        (forged, 401, "bad_ticket"),
        (mint(SECRET, "alice", 60, now=time.time() - 600), 401, "ticket_expired"),
        (ticket("alice", ttl_s=7200), 401, "bad_ticket"),  # over call_token_max_ttl_s
        (unsigned, 401, "bad_ticket"),  # alg "none" is never accepted
        (mint_control(SECRET, "alice", "some-call", 60), 403, "ticket_scope"),
        (ticket("alice", providers=["openai-translate"]), 403, "provider_not_allowed"),
    ]
    try:
        for i, (token, status, code) in enumerate(refused):
            r = post(public, f"198.51.100.{100 + i}", body, token)
            error_of(r, status, code)
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
    finally:
        await holder.close()
    # None of it cost an agent.
    assert {p.pid for p in public.agent_processes()} == before

    # A ticket minted by the CLI, as an operator tries it, opens a call and its control.
    cli_ticket = await asyncio.to_thread(ticket_from_cli, "carol")
    caller = await place(public, "198.51.100.2", cli_ticket)
    try:
        assert caller.result.status == 201, caller.result.error
        await caller.wait_for(lambda m: m.get("state") == "listening", 15)
        # The control token is bound to its call: another call's (validly signed) is refused
        # by the api before any node is asked, and so is a forged one.
        url = "ws" + public.url.removeprefix("http") + caller.result.control_url
        for bad in (mint_control(SECRET, "carol", "another-call", 60), forged):
            async with websockets.connect(f"{url}?token={bad}") as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 4401

        # Ending it takes its control token too: the call id alone, the ticket that opened
        # it, another call's control token or a forged one end nothing.
        call_url = f"{public.url}/v1/calls/{caller.result.call_id}"
        refused_hangups = [
            (None, 401, "control_token_required"),
            (cli_ticket, 403, "ticket_scope"),
            (mint_control(SECRET, "carol", "another-call", 60), 403, "ticket_scope"),
            (forged, 401, "bad_ticket"),
        ]
        for token, status, code in refused_hangups:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            error_of(httpx.delete(call_url, headers=headers, timeout=5), status, code)
        assert public.health()["active_calls"] == 1
        mark = caller.mark()
        own = {"Authorization": f"Bearer {caller.result.control_token}"}
        assert httpx.delete(call_url, headers=own, timeout=5).status_code == 204
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=mark)
        assert ended["reason"] == "remote_hangup"
    finally:
        await caller.close()


async def test_direct_mode_needs_a_ticket_that_allows_it_and_is_limited(public: Server) -> None:
    body = {"source": "ja", "target": "en"}
    ip = "198.51.100.3"
    r = post(public, ip, body, ticket("dave"), "/v1/calls/direct")
    error_of(r, 403, "direct_not_allowed")
    allowed = ticket("dave", direct=True)
    # No provider key on this server: each allowed request reaches the mint and is refused
    # there, but still counts against the subject's hourly allowance.
    for _ in range(DIRECT_PER_HOUR):
        r = post(public, ip, body, allowed, "/v1/calls/direct")
        error_of(r, 503, "provider_unavailable")
    r = post(public, "198.51.100.4", body, allowed, "/v1/calls/direct")  # same subject
    error_of(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 60  # an hourly allowance refills slowly


def test_call_requests_per_address_are_rate_limited(public: Server) -> None:
    ip, token = "198.51.100.5", ticket("erin")
    # Every request counts, refused ones too (401 here, 400 below): that is what a flood is.
    error_of(post(public, ip, {}, None), 401, "ticket_required")
    for _ in range(RATE_PER_IP - 1):
        r = httpx.post(
            f"{public.url}/v1/calls",
            content=b"{not json",
            headers={
                "X-Forwarded-For": ip,
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
            timeout=5,
        )
        error_of(r, 400, "bad_json")
    r = post(public, ip, {}, token)
    err = error_of(r, 429, "rate_limited")
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 60 // RATE_PER_IP + 1, wait
    assert f"{wait} s" in err["message"]
    # Another address is not affected (its request is judged on its merits: a bad body).
    error_of(post(public, "198.51.100.6", {}, token), 400, "bad_request")


async def test_concurrent_calls_per_subject_and_per_address(public: Server) -> None:
    callers: list[Caller] = []
    try:
        first = await place(public, "198.51.100.7", ticket("frank"))
        callers.append(first)
        assert first.result.status == 201, first.result.error
        # The same subject from elsewhere: one call at once per subject.
        second = await place(public, "198.51.100.8", ticket("frank"))
        callers.append(second)
        assert second.result.status == 429 and second.result.error["code"] == "rate_limited"
        assert second.result.retry_after is not None
        # Per address: two subjects behind one address get two calls, the third is refused.
        other = await place(public, "198.51.100.7", ticket("grace"))
        callers.append(other)
        assert other.result.status == 201, other.result.error
        third = await place(public, "198.51.100.7", ticket("heidi"))
        callers.append(third)
        assert third.result.status == 429 and third.result.error["code"] == "rate_limited"
        assert public.health()["active_calls"] == 2

        # When the subject's call ends, its slot is free again without any release step
        # from the api: the registry no longer knows the call.
        own = {"Authorization": f"Bearer {first.result.control_token}"}
        r = httpx.delete(f"{public.url}/v1/calls/{first.result.call_id}", headers=own, timeout=5)
        assert r.status_code == 204
        wait_until(lambda: public.health()["active_calls"] == 1, 15, what="the call to end")
        again = await place(public, "198.51.100.9", ticket("frank"))
        callers.append(again)
        assert again.result.status == 201, again.result.error
    finally:
        for c in callers:
            await c.close()


async def test_control_messages_and_language_switches_are_limited(public: Server) -> None:
    caller = await place(public, "198.51.100.10", ticket("ivan"))
    try:
        assert caller.result.status == 201, caller.result.error
        await caller.wait_for(lambda m: m.get("state") == "listening", 15)

        # Oversized: refused with a reason, the call goes on.
        since = caller.mark()
        oversized = "x" * (MAX_MESSAGE_BYTES + 1)
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": oversized})
        err = await caller.wait_for(lambda m: m.get("type") == "error", 10, since)
        assert err["code"] == "bad_message" and str(MAX_MESSAGE_BYTES) in err["message"]

        # Language switches: SWITCHES_PER_MINUTE pass, the next is refused by the agent
        # and the page is told the pair it still has.
        for _ in range(SWITCHES_PER_MINUTE):
            since = caller.mark()
            caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "en"})
            await caller.wait_for(lambda m: m.get("type") == "languages", 10, since)
        since = caller.mark()
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "en"})
        err = await caller.wait_for(lambda m: m.get("type") == "error", 10, since)
        assert err["code"] == "rate_limited" and "language" in err["message"]
        langs = await caller.wait_for(lambda m: m.get("type") == "languages", 10, since)
        assert langs["source"] == "ja" and langs["target"] == "en"  # the pair it had

        # Control messages: CONTROL_PER_MINUTE in all (the switches above count; the
        # oversized one was refused before counting), then the api drops them with an error
        # instead of relaying them.
        used = SWITCHES_PER_MINUTE + 1
        since = caller.mark()
        for _ in range(CONTROL_PER_MINUTE - used + 1):
            caller.send({"v": 1, "type": "ping"})
        err = await caller.wait_for(lambda m: m.get("code") == "rate_limited", 10, since)
        assert "control messages" in err["message"]
        assert caller.channel_open  # a noisy page is slowed down, not cut off
    finally:
        await caller.close()


async def test_a_tickets_max_call_s_caps_the_call(public: Server) -> None:
    caller = await place(public, "198.51.100.11", ticket("judy", max_call_s=3))
    try:
        assert caller.result.status == 201, caller.result.error
        await caller.wait_for(lambda m: m.get("state") == "listening", 15)
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10)
        assert ended["reason"] == "max_duration", ended
    finally:
        await caller.close()
