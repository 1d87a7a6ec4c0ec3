"""A scripted caller over aiortc: what the page does, minus the browser.

It plays PCM (e.g. a WAV fixture, then silence) as its microphone, posts the offer, opens
the call's control WebSocket with the token from the answer, and records what comes back:
answer time, ICE connect time, first agent audio, every control message. Tests and
benchmarks both use it.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import ssl
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, Packet
from websockets.asyncio.client import ClientConnection

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
AUDIBLE_RMS = 500.0  # int16 RMS above which agent audio counts as heard
VOICED_PEAK = 500  # int16 peak above which a sent frame counts as speech
SILENCE_BYTES = 8  # agents' Opus silence: 3-8 bytes (transports.rtp_media.OPUS_SILENCE)


def load_wav_mono(path: Path | str, rate: int = RATE) -> np.ndarray:
    """A WAV file as int16 mono at ``rate``."""
    import soxr

    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        channels, src_rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if src_rate != rate:
        data = soxr.resample(data, src_rate, rate).astype(np.int16)
    return data


class PcmTrack(MediaStreamTrack):
    """A microphone that plays queued PCM in real time and silence in between."""

    kind = "audio"

    def __init__(self, send: bool = True) -> None:
        super().__init__()
        self._send = send  # False: a muted mic that sends no packets at all (cheap load)
        self._pending = np.zeros(0, dtype=np.int16)
        self._echo = np.zeros(0, dtype=np.int16)  # the "room": mixed in, never queued behind
        self._pts = 0
        self._start: float | None = None
        # time.monotonic() when the last frame with speech in it was handed to the sender:
        # the end of a spoken sentence, for end-of-speech latency measurements.
        self.last_voiced_sent_at: float | None = None

    def play(self, pcm: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])

    def leak(self, pcm: np.ndarray) -> None:
        """Sound from the device's own speaker, heard by this microphone as it plays (mixed
        with whatever is being said, at most a quarter second behind)."""
        self._echo = np.concatenate([self._echo, pcm.astype(np.int16)])[-RATE // 4 :]

    @property
    def playing(self) -> bool:
        return len(self._pending) > 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError  # stop() means the microphone is gone: send nothing
        while not self._send and self.readyState == "live":
            await asyncio.sleep(0.5)
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._pts / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
        if chunk.size and int(np.abs(chunk).max()) > VOICED_PEAK:
            self.last_voiced_sent_at = time.monotonic()
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.pad(chunk, (0, FRAME_SAMPLES - len(chunk)))
        if self._echo.size:
            echo, self._echo = self._echo[:FRAME_SAMPLES], self._echo[FRAME_SAMPLES:]
            mixed = chunk.astype(np.int32)
            mixed[: len(echo)] += echo
            chunk = np.clip(mixed, -32768, 32767).astype(np.int16)
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


async def server_ice_servers(base_url: str) -> list[RTCIceServer]:
    """What the page passes to RTCPeerConnection: ``GET /v1/ice-servers`` (TURN, if any)."""
    async with httpx.AsyncClient(timeout=5) as http:
        body = (await http.get(f"{base_url.rstrip('/')}/v1/ice-servers")).json()
    return [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in body.get("iceServers", [])
    ]


def selected_candidate_type(pc: RTCPeerConnection) -> str | None:
    """The local candidate type ICE settled on ("host", "relay", …), or None. aiortc has
    no getStats() for this; it reads its ICE connection (aioice) directly."""
    for transceiver in pc.getTransceivers():
        ice = transceiver.sender.transport.transport
        pair = getattr(getattr(ice, "_connection", None), "_nominated", {}).get(1)
        if pair is not None:
            return pair.local_candidate.type
    return None


class PrecodedTrack(MediaStreamTrack):
    """A microphone that loops Opus packets encoded once: a load client's 50 packets a
    second then cost no encoding (aiortc packs pre-encoded packets as they are)."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self._packets = packets
        self._i = 0
        self._start: float | None = None

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._i * FRAME_SAMPLES / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = Packet(self._packets[self._i % len(self._packets)])
        packet.pts = self._i * FRAME_SAMPLES
        packet.time_base = fractions.Fraction(1, RATE)
        self._i += 1
        return packet


def precode(pcm48k: np.ndarray) -> list[bytes]:
    """PCM16 mono at 48 kHz as 20 ms Opus packets (for ``PrecodedTrack``)."""
    from dragoman.media.opus import OpusEncoder

    enc = OpusEncoder(RATE)
    whole = len(pcm48k) // FRAME_SAMPLES * FRAME_SAMPLES
    frames = pcm48k[:whole].astype(np.int16).reshape(-1, FRAME_SAMPLES)
    return [enc.encode(f.tobytes()) for f in frames]


@dataclass
class CallResult:
    status: int | None = None
    call_id: str | None = None
    error: dict[str, Any] | None = None
    retry_after: str | None = None
    offer_ms: float | None = None  # the client's own offer (aiortc: slow, Python)
    answer_ms: float | None = None
    connected_ms: float | None = None
    # The first RTP packet carrying the agent's voice (longer than the few-byte Opus silence
    # packet agents send when quiet) reached us: what the server controls. first_audio_ms
    # adds aiortc's jitter buffer (it holds 4 packets, 80 ms) and decoding.
    first_packet_ms: float | None = None
    first_audio_ms: float | None = None
    node_id: str | None = None
    server_timings: dict[str, float] = field(default_factory=dict)
    answer_sdp: str | None = None  # the server's answer as it came (aiortc re-writes its copy)
    direct: dict[str, Any] | None = None  # a direct-mode answer (fleet full: overflow)
    control_url: str | None = None
    control_token: str | None = None
    control_close: tuple[int, str] | None = None  # how the control channel last closed
    messages: list[dict[str, Any]] = field(default_factory=list)
    message_at: list[float] = field(default_factory=list)  # time.monotonic() of each message
    audio_rms: list[float] = field(default_factory=list)
    audio_at: list[float] = field(default_factory=list)  # time.monotonic() of each frame


class Caller:
    def __init__(
        self,
        base_url: str,
        source: str = "ja",
        target: str = "en",
        send_audio: bool = True,
        keep_listening: bool = True,
        provider: str | None = None,
        glossary: str | None = None,
        ice_servers: list[RTCIceServer] | None = None,
        mic: MediaStreamTrack | None = None,
        ticket: str | None = None,
        mode: str | None = None,
        echo: float = 0.0,
        room: str | None = None,
        interpretation: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # send_audio=False: a muted mic that sends no packets. keep_listening=False: stop
        # decoding the agent's audio once it has been heard. Both keep a load client cheap
        # (one process decoding dozens of calls starves its own ICE consent checks).
        self.base_url = base_url.rstrip("/")
        self.source, self.target = source, target
        self.provider = provider
        self.glossary = glossary
        self.ticket = ticket  # a call ticket, for servers that require one
        self.mode = mode  # "conversation": two people on this one "device"
        self.room = room  # a room invitation's token: join that room as its second person
        self.interpretation = interpretation  # "simultaneous" | "consecutive"; None: default
        # > 0: what the "speaker" plays leaks back into the "microphone" at this gain, as on
        # a device shared by two people (conversation mode's echo test).
        self.echo = echo
        # An https:// server's trust (e.g. exactly its self-signed certificate): for the
        # POST and the control WebSocket; the media (DTLS-SRTP) is WebRTC's own.
        self.ssl_context = ssl_context
        # No STUN server: aiortc would otherwise wait for a public one first.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or []))
        self.mic: Any = mic or PcmTrack(send=send_audio)
        self.keep_listening = keep_listening
        self.result = CallResult()
        self._t0 = 0.0
        self._ws: ClientConnection | None = None
        self._control_open = asyncio.Event()
        self._message_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def _ms(self) -> float:
        return round((time.perf_counter() - self._t0) * 1000, 1)

    def _on_message(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            return
        self.result.messages.append(msg)
        self.result.message_at.append(time.monotonic())
        self._message_event.set()

    async def open_control(self) -> None:
        """(Re)connect the call's control WebSocket, as the page does after the answer."""
        assert self.result.control_url and self.result.control_token
        if self._ws is not None:
            await self._ws.close()
        self._control_open.clear()
        url = "ws" + self.base_url.removeprefix("http") + self.result.control_url
        self._ws = await websockets.connect(
            f"{url}?token={self.result.control_token}", ssl=self.ssl_context
        )
        self._control_open.set()
        self._tasks.append(asyncio.ensure_future(self._read_control(self._ws)))

    async def _read_control(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._on_message(raw)
        except websockets.ConnectionClosed:
            pass
        self.result.control_close = (ws.close_code or 1006, ws.close_reason or "")
        self._message_event.set()

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected" and self.result.connected_ms is None:
            self.result.connected_ms = self._ms()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            pcm = frame.to_ndarray().astype(np.float32)
            rms = float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0
            if self.echo > 0 and isinstance(self.mic, PcmTrack):
                # Interleaved channels → mono at the mic's rate (both 48 kHz), attenuated.
                mono = pcm.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                self.mic.leak((mono * self.echo).astype(np.int16))
            self.result.audio_rms.append(rms)
            self.result.audio_at.append(time.monotonic())
            if rms > AUDIBLE_RMS and self.result.first_audio_ms is None:
                self.result.first_audio_ms = self._ms()
                if not self.keep_listening:
                    self._stop_decoding(track)
                    return

    def _stop_decoding(self, track: MediaStreamTrack) -> None:
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track:
                # aiortc drops RTP before decoding when its receiver is disabled (the switch
                # Pipecat uses for the same purpose); there is no public API for it.
                transceiver.receiver._enabled = False

    def _watch_first_packet(self, transceiver: Any) -> None:
        # aiortc has no per-packet hook; wrap its receiver's private handler (bench only).
        receiver = transceiver.receiver
        handle = receiver._handle_rtp_packet

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            if self.result.first_packet_ms is None and len(packet.payload) > SILENCE_BYTES:
                self.result.first_packet_ms = self._ms()
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed

    async def call(self, client: httpx.AsyncClient | None = None) -> CallResult:
        """Press Call: offer → POST → answer. Returns once the HTTP exchange is done."""
        self._t0 = time.perf_counter()
        self._watch_first_packet(self.pc.addTransceiver(self.mic, direction="sendrecv"))
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers host candidates
        self.result.offer_ms = self._ms()
        body = {
            "sdp": self.pc.localDescription.sdp,
            "type": "offer",
            "source": self.source,
            "target": self.target,
        }
        if self.provider:
            body["provider"] = self.provider
        if self.glossary:
            body["glossary"] = self.glossary
        if self.mode:
            body["mode"] = self.mode
        if self.room:
            body["room"] = self.room
        if self.interpretation:
            body["interpretation"] = self.interpretation
        own = client is None
        client = client or httpx.AsyncClient(timeout=30, verify=self.ssl_context or True)
        try:
            headers = {"Authorization": f"Bearer {self.ticket}"} if self.ticket else {}
            resp = await client.post(f"{self.base_url}/v1/calls", json=body, headers=headers)
        finally:
            if own:
                await client.aclose()
        self.result.status = resp.status_code
        self.result.answer_ms = self._ms()
        data = resp.json()
        if resp.status_code == 200 and data.get("mode") == "direct":
            self.result.direct = data
            return self.result
        if resp.status_code != 201:
            self.result.error = data.get("error")
            self.result.retry_after = resp.headers.get("retry-after")
            return self.result
        self.result.call_id = data["call_id"]
        self.result.node_id = data.get("node_id")
        self.result.server_timings = data.get("timings_ms", {})
        self.result.answer_sdp = data["sdp"]
        self.result.control_url = data.get("control_url")
        self.result.control_token = data.get("control_token")
        await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], data["type"]))
        if self.result.control_url:
            await self.open_control()
        return self.result

    @property
    def channel_open(self) -> bool:
        """The control channel is connected."""
        return self._ws is not None and self._ws.close_code is None

    def send(self, msg: dict[str, Any]) -> None:
        """Send a control message (queued on the socket; the agent answers asynchronously)."""
        assert self._ws is not None
        self._tasks.append(asyncio.ensure_future(self._ws.send(json.dumps(msg))))

    async def wait_open(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._control_open.wait(), timeout)

    def max_rms_after(self, msg: dict[str, Any], window_s: float = 10.0) -> float:
        """Loudest agent audio frame received within ``window_s`` after control message
        ``msg`` arrived (e.g. a ``speaking`` state): speech measured where it should be, not
        a running maximum that the connect chime alone would satisfy."""
        at = next(
            t for m, t in zip(self.result.messages, self.result.message_at, strict=True) if m is msg
        )
        return max(
            (
                r
                for r, t in zip(self.result.audio_rms, self.result.audio_at, strict=True)
                if at <= t <= at + window_s
            ),
            default=0.0,
        )

    def mark(self) -> int:
        """A point in the message log: ``wait_for(..., since=caller.mark())`` then only
        matches messages that arrive after it (not answers to an earlier step)."""
        return len(self.result.messages)

    async def wait_for(self, predicate: Any, timeout: float, since: int = 0) -> dict[str, Any]:
        """Wait for a control message matching ``predicate``, among those received from
        index ``since`` on (default: every message of the call)."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for msg in self.result.messages[seen:]:
                if predicate(msg):
                    return msg
            seen = len(self.result.messages)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no matching message in {timeout} s; got {self.result.messages}"
                )
            self._message_event.clear()
            try:
                await asyncio.wait_for(self._message_event.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        await self.pc.close()
