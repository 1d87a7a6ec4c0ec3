"""One call's plain-RTP media on loopback, between Janus and this agent process.

In: RTP from Janus → reorder (``media.reorder``) → Opus decode at the rate the provider
wants, lost packets rebuilt from the next packet's FEC or concealed → ``on_audio(pcm)``.
Out: PCM at ``out_rate`` written in 20 ms pieces → one Opus packet every 20 ms on a
drift-free timer, a cached Opus silence frame when there is nothing to say, so the
caller's clock never stops. Janus does not latch: we send from the port we announced.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dragoman.media.opus import OpusDecoder, OpusEncoder
from dragoman.media.reorder import ReorderBuffer
from dragoman.media.rtp import OPUS_CLOCK, parse_rtp, rtp_header
from dragoman.pipeline.pacing import PacingStats

log = logging.getLogger(__name__)

FRAME_S = 0.020
TS_STEP = OPUS_CLOCK // 50  # 960 RTP clock ticks per 20 ms
# A 20 ms CELT silence frame (TOC 0xF8: fullband, 20 ms, mono, one frame): every Opus
# decoder plays it as silence, and sending it costs no encoding.
OPUS_SILENCE = b"\xf8\xff\xfe"
RESYNC_S = 0.2  # a timer this late (CPU starvation, a long pause) restarts the clock


@dataclass(frozen=True)
class RtpPeer:
    """Where this call's plain RTP goes: the Janus side of the bridge."""

    address: str
    port: int
    payload_type: int


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, media: RtpMedia) -> None:
        self._media = media

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._media._on_datagram(data, addr)


class RtpMedia:
    def __init__(
        self,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        in_rate: int,
        out_rate: int,
        opus_complexity: int = 5,
    ) -> None:
        self._rtp_sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.peer: RtpPeer | None = None
        self._decoder = OpusDecoder(in_rate)
        self._encoder = OpusEncoder(out_rate, complexity=opus_complexity)
        self._in_samples = in_rate // 50
        self._out_bytes = out_rate // 50 * 2
        self.reorder = ReorderBuffer()
        self.pacing = PacingStats()
        self.on_audio: Callable[[bytes], None] = lambda _pcm: None
        self.last_rx_at: float | None = None
        self.foreign_packets = 0  # datagrams from anyone but the gateway's port
        self._transport: asyncio.DatagramTransport | None = None
        self._out: deque[tuple[bytes, asyncio.Future[None] | None]] = deque()
        self._partial = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc = random.randrange(1, 1 << 32)
        self._marker = True

    @property
    def port(self) -> int:
        return self._rtp_sock.getsockname()[1]

    async def start(self, peer: RtpPeer) -> None:
        """Start receiving, and sending (silence first) to ``peer``, every 20 ms."""
        self.peer = peer
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), sock=self._rtp_sock
        )
        self._due = loop.time()
        self._timer = loop.call_at(self._due, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, fut in self._out:
            if fut is not None and not fut.done():
                fut.cancel()
        self._out.clear()
        if self._transport is not None:
            self._transport.close()
        else:
            self._rtp_sock.close()
        self._rtcp_sock.close()

    # --- in ------------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = self.peer
        if peer is None or addr[1] != peer.port:
            self.foreign_packets += 1  # only the gateway may talk to this port
            return
        pkt = parse_rtp(data)
        if pkt is None or pkt.payload_type != peer.payload_type:
            return
        self.last_rx_at = time.monotonic()
        for slot in self.reorder.push(pkt.seq, pkt.payload):
            try:
                if slot.payload is not None:
                    pcm = self._decoder.decode(slot.payload)
                else:
                    pcm = self._decoder.conceal(self._in_samples, slot.fec)
            except Exception as e:  # one corrupt packet must not end the call
                log.debug("opus decode: %s", e)
                continue
            if pcm:
                self.on_audio(pcm)

    # --- out -----------------------------------------------------------------------------
    def write(self, pcm16: bytes) -> asyncio.Future[None]:
        """Queue audio at ``out_rate``; the future resolves once its last byte was sent."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._partial += pcm16
        pieces = []
        while len(self._partial) >= self._out_bytes:
            pieces.append(bytes(self._partial[: self._out_bytes]))
            del self._partial[: self._out_bytes]
        if not pieces:
            # Less than 20 ms so far: it goes out with the next piece, or padded when the
            # queue runs dry.
            self._out.append((b"", fut))
            return fut
        for piece in pieces[:-1]:
            self._out.append((piece, None))
        self._out.append((pieces[-1], fut))
        return fut

    def clear(self) -> None:
        """Drop queued audio (an interruption)."""
        for _, fut in self._out:
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._out.clear()
        self._partial.clear()

    def _next_payload(self) -> bytes:
        while self._out:
            piece, fut = self._out.popleft()
            if fut is not None and not fut.done():
                fut.set_result(None)
            if piece:
                return self._encoder.encode(piece)
        if self._partial:  # the tail of an utterance: pad it to a whole frame
            piece = bytes(self._partial) + bytes(self._out_bytes - len(self._partial))
            self._partial.clear()
            return self._encoder.encode(piece)
        return OPUS_SILENCE

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = now - self._due
        if late > RESYNC_S:
            # Far behind (the process was starved): catching up would burst packets at the
            # caller. Skip the missed slots; the RTP clock still follows real time.
            missed = int(late / FRAME_S)
            self._ts += missed * TS_STEP
            self._due += missed * FRAME_S
            self.pacing.record(late)
        else:
            self.pacing.record(max(0.0, late))
        payload = self._next_payload()
        peer, transport = self.peer, self._transport
        if peer is not None and transport is not None:
            header = rtp_header(peer.payload_type, self._seq, self._ts, self._ssrc, self._marker)
            transport.sendto(header + payload, (peer.address, peer.port))
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + TS_STEP) & 0xFFFFFFFF
        self._due += FRAME_S
        self._timer = loop.call_at(self._due, self._tick)
