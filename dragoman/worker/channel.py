"""An asyncio face on a multiprocessing pipe, used at both ends of worker ↔ agent.

Messages are small dicts (offer, answer, end, ended); the pipe is the agent's lifeline:
when either side dies the other sees EOF.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import Any


class ChannelClosed(EOFError):
    pass


class PipeChannel:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._loop.add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._queue.put_nowait(self._conn.recv())
        except (EOFError, OSError):
            self._close_reader()
            self._queue.put_nowait(None)

    def _close_reader(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._conn.fileno())

    async def recv(self) -> dict[str, Any]:
        msg = await self._queue.get()
        if msg is None:
            self._queue.put_nowait(None)  # every later recv sees the EOF too
            raise ChannelClosed()
        return msg

    def send(self, msg: dict[str, Any]) -> bool:
        """Send without blocking the loop (messages are tiny); False once the peer is gone."""
        try:
            self._conn.send(msg)
            return True
        except (BrokenPipeError, OSError, EOFError):
            return False

    def close(self) -> None:
        self._close_reader()
        self._conn.close()
