"""Each call's control channel on its node: the worker's end of page ⇄ agent messages.

The agent's messages for the page arrive on its pipe; the page attaches (and re-attaches
after a network blip) through the api. While no page is attached, messages wait in a
bounded mailbox and are delivered on attach — preceded by the latest ``languages`` and
``state`` if those went out earlier, so a page that reconnects knows where the call
stands. A newer connection for the same call replaces the older one. After the call ends,
its channel lingers briefly so a page can still read why.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import deque
from collections.abc import Callable
from typing import Any

from dragoman.contract.page import (
    CLOSE_ENDED,
    CLOSE_REPLACED,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_CALL,
)
from dragoman.fleet.control_link import LinkClosed

MAILBOX = 256
LINGER_S = 30.0
_SNAPSHOT = ("languages", "state", "talk")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class CallControl:
    def __init__(self, call_id: str, token: str, to_agent: Callable[[dict[str, Any]], bool]):
        self.call_id = call_id
        self._digest = _digest(token)
        self._to_agent = to_agent
        self._mailbox: deque[dict[str, Any]] = deque(maxlen=MAILBOX)
        self._latest: dict[str, dict[str, Any]] = {}
        self._queue: asyncio.Queue[dict[str, Any] | LinkClosed] | None = None
        self.ended = False

    def authorized(self, token: str) -> bool:
        return hmac.compare_digest(self._digest, _digest(token))

    def publish(self, msg: dict[str, Any]) -> None:
        """A message from the agent for the page."""
        if msg.get("type") in _SNAPSHOT:
            self._latest[msg["type"]] = msg
        if self._queue is not None:
            self._queue.put_nowait(msg)
        else:
            self._mailbox.append(msg)

    def end(self) -> None:
        """The agent is gone: the page gets what is left, then the channel closes."""
        self.ended = True
        if self._queue is not None:
            self._queue.put_nowait(LinkClosed(CLOSE_ENDED, "call ended"))

    def attach(self) -> LocalControlLink:
        if self._queue is not None:
            self._queue.put_nowait(LinkClosed(CLOSE_REPLACED, "replaced by a newer connection"))
        queue: asyncio.Queue[dict[str, Any] | LinkClosed] = asyncio.Queue()
        backlog = list(self._mailbox)
        self._mailbox.clear()
        for kind in _SNAPSHOT:
            latest = self._latest.get(kind)
            if latest is not None and not any(m is latest for m in backlog):
                queue.put_nowait(latest)
        for msg in backlog:
            queue.put_nowait(msg)
        if self.ended:
            queue.put_nowait(LinkClosed(CLOSE_ENDED, "call ended"))
        self._queue = queue
        return LocalControlLink(self, queue)

    def detach(self, queue: asyncio.Queue[Any]) -> None:
        if self._queue is queue:
            self._queue = None

    def to_agent(self, msg: dict[str, Any]) -> None:
        if self.ended or not self._to_agent(msg):
            raise LinkClosed(CLOSE_ENDED, "call ended")


class LocalControlLink:
    """A page's attachment to a call on this node (``fleet.control_link.ControlLink``)."""

    def __init__(self, control: CallControl, queue: asyncio.Queue[Any]) -> None:
        self._control = control
        self._queue = queue

    async def recv(self) -> dict[str, Any]:
        item = await self._queue.get()
        if isinstance(item, LinkClosed):
            self._control.detach(self._queue)
            raise item
        return item

    async def send(self, msg: dict[str, Any]) -> None:
        self._control.to_agent(msg)

    async def close(self) -> None:
        self._control.detach(self._queue)


class ControlHub:
    """Every call's control channel on this node, by call id."""

    def __init__(self, linger_s: float = LINGER_S) -> None:
        self._calls: dict[str, CallControl] = {}
        self._linger_s = linger_s

    def open(
        self, call_id: str, token: str, to_agent: Callable[[dict[str, Any]], bool]
    ) -> CallControl:
        control = CallControl(call_id, token, to_agent)
        self._calls[call_id] = control
        return control

    def publish(self, call_id: str | None, msg: dict[str, Any]) -> None:
        control = self._calls.get(call_id or "")
        if control is not None:
            control.publish(msg)

    def authorized(self, call_id: str, token: str) -> bool:
        control = self._calls.get(call_id)
        return control is not None and control.authorized(token)

    def attach(self, call_id: str, token: str) -> LocalControlLink:
        control = self._calls.get(call_id)
        if control is None:
            raise LinkClosed(CLOSE_UNKNOWN_CALL, "no such call on this node")
        if not control.authorized(token):
            raise LinkClosed(CLOSE_UNAUTHORIZED, "wrong call token")
        return control.attach()

    def ended(self, call_id: str | None) -> None:
        control = self._calls.get(call_id or "")
        if control is None or control.ended:
            return
        control.end()
        asyncio.get_running_loop().call_later(self._linger_s, self._forget, call_id, control)

    def drop(self, call_id: str) -> None:
        """A call that never started (its offer was refused)."""
        self._calls.pop(call_id, None)

    def _forget(self, call_id: str, control: CallControl) -> None:
        if self._calls.get(call_id) is control:
            del self._calls[call_id]
