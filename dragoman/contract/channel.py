"""An asyncio face on a multiprocessing pipe, used at both ends of worker ↔ agent.

Typed: ``send`` takes a ``contract.pipe`` message and puts its ``model_dump()`` dict on the
pipe; ``recv`` returns the next message validated by the adapter of this end's direction
(``TO_AGENT`` or ``TO_WORKER``). The pipe is the agent's lifeline: when either side dies the
other sees EOF.

Neither end ever blocks its event loop on the pipe. Both read and write the socket
non-blocking with their own framing (a 4-byte length, then the pickled dict): a reader only
unpickles complete frames, so a peer stopped mid-message (SIGSTOP, a stuck loop) cannot
stall it; a writer whose pipe is full queues the rest and writes it when the pipe drains
(``loop.add_writer``), so two agents exchanging room audio through the worker cannot
deadlock on full pipes. The queue is bounded (``MAX_PENDING_BYTES``): a peer that stops
reading for that long is stuck, and what it is sent meanwhile is dropped (counted in
``dropped``; the supervisor acts on a stuck agent by its heartbeat).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
from collections import deque
from multiprocessing.connection import Connection
from typing import Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

log = logging.getLogger("dragoman.channel")

T = TypeVar("T")

HEADER = struct.Struct("!I")  # the frame's length in bytes
MAX_FRAME_BYTES = 64 * 2**20  # a bigger header is a corrupt stream: the channel closes
# A second of room audio is ~50 kB and a page message a few hundred bytes: 4 MiB unread is a
# peer that has stopped reading, not one that is slow.
MAX_PENDING_BYTES = 4 * 2**20
READ_CHUNK = 256 * 1024


class ChannelClosed(EOFError):
    pass


class PipeChannel(Generic[T]):
    """One end of a worker ↔ agent pipe: ``send`` a ``contract.pipe`` message, ``recv`` the
    next one validated for this end's direction; never blocks the event loop (see the
    module's docstring for the framing and the bounded write queue)."""

    def __init__(
        self,
        conn: Connection,
        incoming: TypeAdapter[T],
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self._conn = conn
        self._fd = conn.fileno()
        self._incoming = incoming
        self._max_pending = max_pending_bytes
        os.set_blocking(self._fd, False)
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._rbuf = bytearray()
        self._reading = True
        self._pending: deque[memoryview] = deque()
        self._pending_bytes = 0
        self._writing = False  # add_writer is registered
        self._broken = False  # a write failed: the peer is gone
        self._closed = False
        self._drained = asyncio.Event()
        self._drained.set()
        self.dropped = 0  # messages not sent because the peer stopped reading
        self._loop.add_reader(self._fd, self._on_readable)

    # --- reading -----------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            while True:
                data = os.read(self._fd, READ_CHUNK)
                if not data:
                    self._eof()
                    return
                self._rbuf += data
                if len(data) < READ_CHUNK:
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._eof()
            return
        self._parse()

    def _parse(self) -> None:
        buf = self._rbuf
        at = 0
        while len(buf) - at >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, at)
            if size > MAX_FRAME_BYTES:
                log.error("corrupt pipe stream (a %d-byte frame); closing it", size)
                self._eof()
                return
            end = at + HEADER.size + size
            if len(buf) < end:
                break
            raw = pickle.loads(buf[at + HEADER.size : end])
            at = end
            try:
                self._queue.put_nowait(self._incoming.validate_python(raw))
            except ValidationError as e:  # a bug on the other side: say so, go on
                log.error("dropped an invalid pipe message: %s", e)
        if at:
            del buf[:at]

    def peer_gone(self) -> None:
        """The peer is known to be gone (its process exited): read what it sent, then end
        as at EOF — never wait for an EOF that a stray copy of its end could withhold."""
        if self._reading:
            self._on_readable()
        self._eof()

    def _eof(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
            self._queue.put_nowait(None)

    async def recv(self) -> T:
        msg = await self._queue.get()
        if msg is None:
            self._queue.put_nowait(None)  # every later recv sees the EOF too
            raise ChannelClosed()
        return msg

    # --- writing -----------------------------------------------------------------------
    def send(self, msg: BaseModel) -> bool:
        """Queue ``msg`` without blocking the loop; False once the peer is gone."""
        if self._broken or self._closed:
            return False
        if self._pending_bytes > self._max_pending:
            if not self.dropped:
                log.warning("pipe peer stopped reading; dropping messages to it")
            self.dropped += 1
            return True
        payload = pickle.dumps(msg.model_dump(), pickle.HIGHEST_PROTOCOL)
        frame = HEADER.pack(len(payload)) + payload
        if not self._pending:
            try:
                written = os.write(self._fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:
                self._break()
                return False
            if written == len(frame):
                return True
            frame = frame[written:]
        self._pending.append(memoryview(frame))
        self._pending_bytes += len(frame)
        if not self._writing:
            self._writing = True
            self._drained.clear()
            self._loop.add_writer(self._fd, self._on_writable)
        return True

    def _on_writable(self) -> None:
        try:
            while self._pending:
                head = self._pending[0]
                written = os.write(self._fd, head)
                self._pending_bytes -= written
                if written < len(head):
                    self._pending[0] = head[written:]
                    return
                self._pending.popleft()
        except BlockingIOError:
            return
        except OSError:
            self._break()
            return
        self._stop_writing()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._drained.set()

    def _break(self) -> None:
        self._broken = True
        self._pending.clear()
        self._pending_bytes = 0
        self._stop_writing()

    async def flush(self, timeout_s: float) -> bool:
        """Wait (up to ``timeout_s``) until everything sent is in the pipe."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._eof()
        self._pending.clear()
        self._pending_bytes = 0
        self._stop_writing()
        self._conn.close()
