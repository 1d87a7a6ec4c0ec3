"""Janus' JSON API over its WebSocket transport on a Unix socket.

One long-lived connection per worker. Requests carry a transaction id and resolve on their
final reply (``success``; ``event`` for plugin messages, which Janus acknowledges first;
``ack`` for keepalives). Everything else — ``webrtcup``, ``media``, ``hangup``,
``detached``, plugin events — is an asynchronous event handed to ``on_event``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, unix_connect

log = logging.getLogger("dragoman.janus")

SUBPROTOCOL = "janus-protocol"
ADMIN_SUBPROTOCOL = "janus-admin-protocol"


class JanusError(RuntimeError):
    """Janus (or its plugin) refused a request; ``reason`` is its own explanation."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusClosed(ConnectionError):
    """The control connection to Janus is gone (Janus died or was restarted)."""


@dataclass
class _Pending:
    final: tuple[str, ...]
    future: asyncio.Future[dict[str, Any]]


def check(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply, or JanusError if Janus refused the request."""
    if reply.get("janus") == "error":
        err = reply.get("error") or {}
        raise JanusError(int(err.get("code", 0)), str(err.get("reason", "unknown error")))
    return reply


def plugin_result(reply: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A plugin reply's data and JSEP; JanusError if Janus or the plugin refused."""
    data = (check(reply).get("plugindata") or {}).get("data") or {}
    if "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "plugin error")))
    return data, reply.get("jsep")


class JanusClient:
    def __init__(self, ws: ClientConnection, on_event: Callable[[dict[str, Any]], None]) -> None:
        self._ws = ws
        self._on_event = on_event
        self._pending: dict[str, _Pending] = {}
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        socket_path: str,
        on_event: Callable[[dict[str, Any]], None],
        timeout_s: float,
        admin: bool = False,
    ) -> JanusClient:
        protocol = ADMIN_SUBPROTOCOL if admin else SUBPROTOCOL
        ws = await asyncio.wait_for(
            unix_connect(
                socket_path,
                "ws://janus/",
                subprotocols=[websockets.Subprotocol(protocol)],
                max_size=2**20,
                compression=None,
                ping_interval=None,  # the worker probes Janus itself (keepalive requests)
            ),
            timeout_s,
        )
        return cls(ws, on_event)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                try:
                    msg = json.loads(raw)
                except (json.JSONDecodeError, TypeError):
                    log.warning("janus sent a non-JSON message")
                    continue
                kind = msg.get("janus")
                pending = self._pending.get(msg.get("transaction") or "")
                if pending is not None and (kind in pending.final or kind == "error"):
                    del self._pending[msg["transaction"]]
                    if not pending.future.done():
                        pending.future.set_result(msg)
                elif pending is not None and kind == "ack":
                    continue  # accepted; the result follows as an event
                else:
                    self._on_event(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for p in self._pending.values():
                if not p.future.done():
                    p.future.set_exception(JanusClosed("the connection to Janus closed"))
            self._pending.clear()

    async def send(
        self, body: dict[str, Any], final: tuple[str, ...] = ("success",)
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a request now; the future resolves to its final reply. Janus handles a
        handle's requests in order, so several may be in flight at once."""
        if self.closed.is_set():
            raise JanusClosed("the connection to Janus is closed")
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = _Pending(final, future)
        try:
            await self._ws.send(json.dumps({**body, "transaction": transaction}))
        except websockets.ConnectionClosed as e:
            self._pending.pop(transaction, None)
            raise JanusClosed("the connection to Janus closed") from e
        future.add_done_callback(lambda _f: self._pending.pop(transaction, None))
        return future

    async def request(
        self, body: dict[str, Any], timeout_s: float, final: tuple[str, ...] = ("success",)
    ) -> dict[str, Any]:
        future = await self.send(body, final)
        try:
            return check(await asyncio.wait_for(future, timeout_s))
        except TimeoutError:
            future.cancel()
            raise

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()


class JanusSession:
    """A Janus session on one connection, with plugin handles in it."""

    def __init__(self, client: JanusClient, session_id: int, timeout_s: float) -> None:
        self.client = client
        self.id = session_id
        self._timeout = timeout_s

    @classmethod
    async def create(cls, client: JanusClient, timeout_s: float) -> JanusSession:
        reply = await client.request({"janus": "create"}, timeout_s)
        return cls(client, int(reply["data"]["id"]), timeout_s)

    async def keepalive(self, timeout_s: float) -> None:
        await self.client.request(
            {"janus": "keepalive", "session_id": self.id}, timeout_s, final=("ack",)
        )

    async def attach(self, plugin: str) -> int:
        reply = await self.client.request(
            {"janus": "attach", "session_id": self.id, "plugin": plugin}, self._timeout
        )
        return int(reply["data"]["id"])

    async def send_message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a plugin request now; the future resolves to its reply (``plugin_result``)."""
        request: dict[str, Any] = {
            "janus": "message",
            "session_id": self.id,
            "handle_id": handle,
            "body": body,
        }
        if jsep is not None:
            request["jsep"] = jsep
        return await self.client.send(request, final=("event", "success"))

    async def detach(self, handle: int) -> None:
        await self.client.request(
            {"janus": "detach", "session_id": self.id, "handle_id": handle}, self._timeout
        )
