"""The control channel's relay side (``fleet/control_link.py``) and its close codes: the
"node lost → ended, agent_lost" rule, written once (``close_page``), holds both where the
api opens a link and where an open link breaks; the page's list of final close codes is
the protocol's (``contract.page``)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from dragoman.api.control import router
from dragoman.config import Settings
from dragoman.contract import page
from dragoman.fleet.control_link import LinkClosed, close_page, relay

WEB = Path(__file__).resolve().parent.parent / "dragoman" / "web"


class FakeSocket:
    """What close_page and relay use of a WebSocket; the page never sends anything."""

    def __init__(self, send_fails: bool = False) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self._send_fails = send_fails
        self._quiet = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if self._send_fails:
            raise RuntimeError("the page went away")
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    async def receive(self) -> dict[str, Any]:
        await self._quiet.wait()  # never set: the page stays silent
        return {"type": "websocket.disconnect"}


def asker(answer: bool) -> tuple[list[int], Any]:
    asked: list[int] = []

    async def node_lost() -> bool:
        asked.append(1)
        return answer

    return asked, node_lost


AGENT_LOST = '{"v": 1, "type": "state", "state": "ended", "reason": "agent_lost"'


async def test_an_unreachable_node_found_dead_ends_the_call_as_agent_lost() -> None:
    ws = FakeSocket()
    asked, node_lost = asker(True)
    await close_page(ws, LinkClosed(page.CLOSE_UNAVAILABLE, "node unreachable"), node_lost)
    assert asked == [1]
    assert len(ws.sent) == 1 and ws.sent[0].startswith(AGENT_LOST), ws.sent
    assert ws.closed == (page.CLOSE_ENDED, "call ended")


async def test_an_unreachable_node_still_alive_lets_the_page_reconnect() -> None:
    ws = FakeSocket()
    asked, node_lost = asker(False)
    await close_page(ws, LinkClosed(page.CLOSE_UNAVAILABLE, "node unreachable"), node_lost)
    assert asked == [1] and ws.sent == []
    assert ws.closed == (page.CLOSE_UNAVAILABLE, "node unreachable")
    assert page.CLOSE_UNAVAILABLE not in page.FINAL_CLOSE_CODES  # the page tries again


@pytest.mark.parametrize("code", sorted(page.FINAL_CLOSE_CODES))
async def test_other_closes_pass_through_without_asking_about_the_node(code: int) -> None:
    ws = FakeSocket()
    asked, node_lost = asker(True)
    await close_page(ws, LinkClosed(code, "x" * 200), node_lost)
    assert asked == [] and ws.sent == []
    assert ws.closed == (code, "x" * 120)  # a close reason fits one frame


async def test_a_page_gone_before_the_news_is_still_closed() -> None:
    ws = FakeSocket(send_fails=True)
    _, node_lost = asker(True)
    await close_page(ws, LinkClosed(page.CLOSE_UNAVAILABLE), node_lost)
    assert ws.closed == (page.CLOSE_ENDED, "call ended")


class BrokenLink:
    """A link to a node that answers nothing and then goes away."""

    async def recv(self) -> dict[str, Any]:
        raise LinkClosed(page.CLOSE_UNAVAILABLE, "the call's node went away")

    async def send(self, msg: dict[str, Any]) -> None:
        raise AssertionError("the page sent nothing")

    async def close(self) -> None:
        pass


async def test_a_link_that_breaks_mid_call_is_closed_by_the_same_rule() -> None:
    ws = FakeSocket()
    asked, node_lost = asker(True)
    await asyncio.wait_for(relay(ws, BrokenLink(), node_lost), 5)
    assert asked == [1] and ws.sent[0].startswith(AGENT_LOST)
    assert ws.closed == (page.CLOSE_ENDED, "call ended")


class DeadNodeDispatcher:
    """The api's view of a call whose node died: opening its link finds it unreachable."""

    class registry:  # noqa: N801 (an attribute, as on the real dispatcher)
        node_ttl_s = 0.0

    def __init__(self, dead: bool) -> None:
        self.dead = dead
        self.asked: list[tuple[str, float]] = []

    async def open_control(self, call_id: str, token: str) -> None:
        raise LinkClosed(page.CLOSE_UNAVAILABLE, "the call's node is unreachable")

    async def node_lost(self, call_id: str, wait_s: float) -> bool:
        self.asked.append((call_id, wait_s))
        return self.dead


@pytest.mark.parametrize("dead", [True, False], ids=["dead", "alive"])
def test_the_api_opening_a_link_to_a_lost_node_uses_the_same_rule(dead: bool) -> None:
    app = FastAPI()
    app.include_router(router)
    app.state.settings = Settings()
    app.state.dispatcher = dispatcher = DeadNodeDispatcher(dead)
    with (
        TestClient(app) as client,
        client.websocket_connect("/v1/calls/c1/control?token=tok") as ws,
    ):
        if dead:
            msg = ws.receive_json()
            assert (msg["state"], msg["reason"]) == ("ended", "agent_lost"), msg
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert dispatcher.asked == [("c1", 1.0)]
    assert closed.value.code == (page.CLOSE_ENDED if dead else page.CLOSE_UNAVAILABLE)


def test_the_pages_final_close_codes_are_the_protocols() -> None:
    """web/call.js cannot import them: its list must be contract.page's."""
    js = (WEB / "call.js").read_text()
    found = re.search(r"const FINAL_CLOSE_CODES = new Set\(\[([\d,\s]*)\]\);", js)
    assert found, "call.js no longer declares FINAL_CLOSE_CODES as a Set of numbers"
    assert {int(c) for c in found.group(1).split(",")} == page.FINAL_CLOSE_CODES
