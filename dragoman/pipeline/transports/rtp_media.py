"""One call's plain-RTP media on loopback, between Janus and this agent process.

Everything runs on one clock of ``ptime_ms`` (20, 40 or 60 ms) — a timer callback, not a
task — so a call costs one cheap wake-up per packet time whatever it is doing: each tick
sends the next ``ptime_ms`` of the agent's voice as one Opus packet (or a cached Opus
silence packet when there is nothing to say, so the caller's clock never stops), then
drains the RTP that arrived (non-blocking
reads, no per-datagram callback), puts it back in order (``media.reorder``) and decodes it
with Opus at the rate the provider wants, lost packets rebuilt from the next packet's FEC
or concealed. Decoded audio is handed to the pipeline in frames of ``in_frame_ms`` by the
one task that awaits ``events()``. Janus does not latch: we send from the port we announced.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import deque

from dragoman.contract.pipe import RtpPeer
from dragoman.media.opus import OpusDecoder, OpusEncoder
from dragoman.media.reorder import ReorderBuffer
from dragoman.media.rtp import OPUS_CLOCK, parse_rtp, rtp_header
from dragoman.pipeline.transports.pacing import PacingStats

log = logging.getLogger(__name__)

# Opus packets of silence that every decoder plays as such, so sending one costs no
# encoding: CELT fullband 20 ms frames (TOC config 31, mono), one (code 0), two (code 1) or
# three (code 3, count byte 3) per packet.
OPUS_SILENCE = {
    20: b"\xf8\xff\xfe",
    40: b"\xf9\xff\xfe\xff\xfe",
    60: b"\xfb\x03\xff\xfe\xff\xfe\xff\xfe",
}
PTIMES = tuple(OPUS_SILENCE)
RESYNC_S = 0.2  # a tick this late (CPU starvation, a long pause) restarts the clock
DRAINED_S = 0.35  # this long with nothing to say: the agent stopped speaking
MAX_BUFFER_S = 120.0  # queued speech beyond this is dropped (a runaway producer)
MAX_READS = 16  # datagrams drained per tick; the rest wait for the next one


class RtpMedia:
    def __init__(
        self,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        in_rate: int,
        out_rate: int,
        in_frame_ms: int = 40,
        opus_complexity: int = 1,
        ptime_ms: int = 20,
    ) -> None:
        if ptime_ms not in PTIMES:
            raise ValueError(f"the agent's packets last {PTIMES} ms, not {ptime_ms}")
        self._sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.peer: RtpPeer | None = None
        self._decoder = OpusDecoder(in_rate)
        self._encoder = OpusEncoder(out_rate, complexity=opus_complexity)
        self._in_samples = in_rate // 50
        # Caller audio goes down the pipeline in frames of in_frame_ms: each frame costs the
        # same Pipecat work whatever its length, and recognition waits for a pause anyway.
        self._in_frame_bytes = in_rate * in_frame_ms // 1000 * 2
        self._in = bytearray()
        self._ready: deque[bytes] = deque()
        self._drained = False
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._period = ptime_ms / 1000
        self._ts_step = OPUS_CLOCK * ptime_ms // 1000
        self._silence = OPUS_SILENCE[ptime_ms]
        self._out_bytes = out_rate * ptime_ms // 1000 * 2
        self._max_out = int(MAX_BUFFER_S * out_rate * 2)
        self.reorder = ReorderBuffer()
        self.pacing = PacingStats()
        self.last_rx_at: float | None = None  # the caller's last packet (no-media limit)
        self.first_rx_at: float | None = None  # the caller's first packet (the call's trace)
        self._out = bytearray()
        self._quiet_ticks = 0
        self._speaking = False
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._ssrc = random.randrange(1, 1 << 32)
        self._marker = True

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self, peer: RtpPeer) -> None:
        """Start the clock: sending to (and accepting from) ``peer`` every ``ptime_ms``."""
        self.peer = peer
        loop = asyncio.get_running_loop()
        self._due = loop.time()
        self._timer = loop.call_at(self._due, self._tick)

    async def events(self) -> tuple[list[bytes], bool]:
        """Wait for the next frames of caller audio (PCM16 at ``in_rate``) and/or the news
        that the agent's queued speech has all gone out (True)."""
        await self._wake.wait()
        self._wake.clear()
        frames = list(self._ready)
        self._ready.clear()
        drained, self._drained = self._drained, False
        return frames, drained

    def _tick(self) -> None:
        peer = self.peer
        assert peer is not None
        loop = asyncio.get_running_loop()
        late = loop.time() - self._due
        if late > RESYNC_S:
            # Far behind (the process was starved): catching up would burst packets at the
            # caller. Skip the missed slots; the RTP clock still follows real time.
            missed = int(late / self._period)
            self._ts += missed * self._ts_step
            self._due += missed * self._period
        self.pacing.record(max(0.0, late))
        self._send(peer)
        self._receive(peer)
        if len(self._in) >= self._in_frame_bytes:
            self._ready.append(bytes(self._in))
            self._in.clear()
            self._wake.set()
        if self._speaking and not self._out:
            self._quiet_ticks += 1
            if self._quiet_ticks * self._period >= DRAINED_S:
                self._speaking = False
                self._drained = True
                self._wake.set()
        self._due += self._period
        self._timer = loop.call_at(self._due, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sock.close()
        self._rtcp_sock.close()

    # --- in ------------------------------------------------------------------------------
    def _receive(self, peer: RtpPeer) -> None:
        """Decode whatever arrived since the last tick (usually one packet)."""
        out = self._in
        for _ in range(MAX_READS):
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if addr[1] != peer.port:
                continue  # only the gateway may talk to this port
            pkt = parse_rtp(data)
            if pkt is None or pkt.payload_type != peer.payload_type:
                continue
            self.last_rx_at = time.monotonic()
            if self.first_rx_at is None:
                self.first_rx_at = self.last_rx_at
            for slot in self.reorder.push(pkt.seq, pkt.payload):
                try:
                    if slot.payload is not None:
                        out += self._decoder.decode(slot.payload)
                    else:
                        out += self._decoder.conceal(self._in_samples, slot.fec)
                except Exception as e:  # one corrupt packet must not end the call
                    log.debug("opus decode: %s", e)

    # --- out -----------------------------------------------------------------------------
    def write(self, pcm16: bytes) -> None:
        """Queue the agent's speech (PCM16 at ``out_rate``); one packet's worth leaves per tick."""
        if len(self._out) + len(pcm16) > self._max_out:
            return
        self._out += pcm16
        self._speaking = True
        self._quiet_ticks = 0

    def clear(self) -> None:
        """Drop queued speech (an interruption)."""
        self._out.clear()

    def _send(self, peer: RtpPeer) -> None:
        if self._out:
            piece = bytes(self._out[: self._out_bytes])
            del self._out[: self._out_bytes]
            if len(piece) < self._out_bytes:  # the tail of an utterance: a whole frame
                piece += bytes(self._out_bytes - len(piece))
            payload = self._encoder.encode(piece)
        else:
            payload = self._silence
        header = rtp_header(peer.payload_type, self._seq, self._ts, self._ssrc, self._marker)
        try:
            self._sock.sendto(header + payload, (peer.address, peer.port))
        except (BlockingIOError, InterruptedError):
            pass  # a full socket buffer on loopback: this packet is lost, the next goes
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + self._ts_step) & 0xFFFFFFFF
