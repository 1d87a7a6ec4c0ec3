"""The call's control channel as it crosses processes: page ⇄ api ⇄ worker ⇄ agent.

The page opens ``/v1/calls/{id}/control?token=…`` on any api replica. The api opens a
``ControlLink`` to the call's node — in-process under ``serve``, a WebSocket to the worker's
internal endpoint in a fleet — and ``relay`` pumps messages both ways until the call ends
(close 1000) or either side goes away. The worker checks the per-call token; the api
keeps no state, so a page that loses its socket may reconnect through any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from dragoman.contract.page import (
    CLOSE_ENDED,
    CLOSE_UNAVAILABLE,
    error,
    parse_page_message,
    state,
)
from dragoman.rate import gcra


class LinkClosed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class ControlLink(Protocol):
    async def recv(self) -> dict[str, Any]:
        """The next agent → page message; LinkClosed when the channel ends."""
        ...

    async def send(self, msg: dict[str, Any]) -> None:
        """A page → agent message."""
        ...

    async def close(self) -> None: ...


async def close_page(
    ws: WebSocket, closed: LinkClosed, node_lost: Callable[[], Awaitable[bool]] | None
) -> None:
    """Close the page's socket as its link to the node closed. When the node could not be
    reached and ``node_lost`` finds it dead (a killed worker takes its agents and Janus with
    it), the page is told its call ended (``agent_lost``, then 1000) rather than left
    reconnecting to a node that is gone."""
    code, reason = closed.code, closed.reason
    if code == CLOSE_UNAVAILABLE and node_lost is not None and await node_lost():
        with contextlib.suppress(Exception):
            await ws.send_text(json.dumps(state("ended", "agent_lost")))
        code, reason = CLOSE_ENDED, "call ended"
    with contextlib.suppress(Exception):
        await ws.close(code, reason[:120])


async def relay(
    ws: WebSocket,
    link: ControlLink,
    node_lost: Callable[[], Awaitable[bool]] | None = None,
    per_minute: int = 0,
) -> None:
    """Pump between an accepted WebSocket and a link until one side ends.

    ``node_lost`` is asked when the link breaks without a word from the node (``close_page``).
    Page messages over ``per_minute`` (0: no limit) are dropped with an error to the page.
    """
    tat: float | None = None

    async def to_page() -> None:
        try:
            while True:
                await ws.send_text(json.dumps(await link.recv()))
        except LinkClosed as e:
            await close_page(ws, e, node_lost)

    async def to_agent() -> None:
        nonlocal tat
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            raw = frame.get("text")
            msg = parse_page_message(raw if raw is not None else frame.get("bytes") or b"")
            if isinstance(msg, str):
                await ws.send_text(json.dumps(error("bad_message", msg)))
                continue
            if per_minute > 0:
                wait, tat = gcra(tat, time.monotonic(), per_minute, 60.0)
                if wait > 0:
                    why = f"Too many control messages: dropped (retry in {math.ceil(wait)} s)."
                    await ws.send_text(json.dumps(error("rate_limited", why)))
                    continue
            await link.send(msg)

    tasks = [asyncio.create_task(to_page()), asyncio.create_task(to_agent())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, LinkClosed):
                await t
        await link.close()
