"""FAKE of OpenAI's realtime translation endpoints (the subset dragoman uses).

From OpenAI's public API reference ("Realtime translation", 2026-11):
- ``GET /v1/realtime/translations?model=…`` WebSocket, Bearer API key or client secret;
  events as in ``dragoman.pipeline.providers.openai_translate``.
- ``POST /v1/realtime/translations/client_secrets`` → ``{"value": "ek_…", "expires_at",
  "session"}``, the session config locked into the secret.
- ``POST /v1/realtime/translations/calls`` (Content-Type application/sdp, Bearer ``ek_…``)
  → SDP answer; translated audio returns on a media track, events on the data channel.

The "translation" is synthetic: every 200 ms of caller audio with speech energy becomes,
300 ms later, 200 ms of a tone plus the text "word". It recognises nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fractions
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from dragoman.fakes.state import FakeState

log = logging.getLogger(__name__)

RATE = 24000
BLOCK_S = 0.2  # the real service emits 200 ms audio deltas
DELAY_S = 0.3  # fake "translation" latency
SPEECH_RMS = 300.0
STALL_MAX_S = 120.0


def _tone(rate: int, seconds: float, hz: float = 330.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 6000).astype(np.int16).tobytes()


TONE_B64 = base64.b64encode(_tone(RATE, BLOCK_S)).decode()


def _is_speech(pcm16: bytes) -> bool:
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    return samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > SPEECH_RMS


class FakeTranslator:
    """Turns caller audio into delayed synthetic translation events."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], rate: int) -> None:
        self._send = send
        self._block = int(rate * BLOCK_S) * 2
        self._buf = bytearray()
        self._queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._in_speech = False
        self.language = "en"
        self._task = asyncio.create_task(self._emit())

    async def feed(self, pcm16: bytes) -> None:
        self._buf += pcm16
        while len(self._buf) >= self._block:
            block = bytes(self._buf[: self._block])
            del self._buf[: self._block]
            if _is_speech(block):
                first = not self._in_speech
                self._in_speech = True
                await self._send(
                    {"type": "session.input_transcript.delta", "delta": "word ", "elapsed_ms": 0}
                )
                prefix = f"[{self.language}] " if first else ""
                self._queue.put_nowait((time.monotonic() + DELAY_S, prefix + "word "))
            else:
                self._in_speech = False

    async def _emit(self) -> None:
        while True:
            due, text = await self._queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._send(
                {"type": "session.output_audio.delta", "delta": TONE_B64, "sample_rate": RATE}
            )
            await self._send({"type": "session.output_transcript.delta", "delta": text})

    def stop(self) -> None:
        self._task.cancel()


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status)


def add_routes(app: web.Application, state: FakeState) -> None:
    app.router.add_get("/v1/realtime/translations", _ws_handler(state))
    app.router.add_post("/v1/realtime/translations/client_secrets", _secrets_handler(state))
    app.router.add_post("/v1/realtime/translations/calls", _calls_handler(state))


# --- WebSocket ---------------------------------------------------------------------------
def _ws_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        fault = state.fault
        if not state.bearer_ok(request.headers.get("Authorization"), allow_secret=True):
            state.count("ws_refused")
            return _error(
                401, fault.message("Incorrect API key provided (fake)."), "invalid_api_key"
            )
        ws = web.WebSocketResponse(autoping=fault.stall_after_s is None, max_msg_size=2**22)
        await ws.prepare(request)
        session: dict[str, Any] = {
            "kind": "openai-translate-ws",
            "model": request.query.get("model"),
            "updates": [],
            "audio_bytes": 0,
        }
        state.sessions.append(session)
        state.count("ws_sessions")

        async def send(event: dict[str, Any]) -> None:
            if not ws.closed:
                event.setdefault("event_id", "evt_" + uuid.uuid4().hex[:12])
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps(event))

        translator = FakeTranslator(send, RATE)
        await send(
            {"type": "session.created", "session": {"id": "sess_fake", "type": "translation"}}
        )
        t0 = time.monotonic()
        soft_error_sent = False
        try:
            async for msg in ws:
                elapsed = time.monotonic() - t0
                if fault.drop_after_s is not None and elapsed >= fault.drop_after_s:
                    request.transport.close()  # abrupt: no close frame
                    break
                if fault.stall_after_s is not None and elapsed >= fault.stall_after_s:
                    state.count("ws_stalled")
                    await asyncio.sleep(STALL_MAX_S)  # read nothing, answer no pings
                    break
                if fault.error_after_s is not None and elapsed >= fault.error_after_s:
                    if not fault.error_fatal:
                        if not soft_error_sent:
                            soft_error_sent = True
                            err = {
                                "type": "rate_limit_error",
                                "code": "rate_limit_exceeded",
                                "message": fault.message("fake: slow down"),
                            }
                            await send({"type": "error", "error": err})
                    else:
                        err = {
                            "type": "server_error",
                            "code": "session_expired",
                            "message": fault.message("fake: the session failed"),
                        }
                        await send({"type": "error", "error": err})
                        await ws.close()
                        break
                if msg.type != WSMsgType.TEXT:
                    continue
                await _on_client_event(json.loads(msg.data), session, translator, send, ws)
        finally:
            translator.stop()
        return ws

    return handle


async def _on_client_event(
    event: dict[str, Any],
    session: dict[str, Any],
    translator: FakeTranslator,
    send: Callable[[dict[str, Any]], Awaitable[None]],
    ws: web.WebSocketResponse,
) -> None:
    kind = event.get("type")
    if kind == "session.update":
        config = event.get("session") or {}
        session["updates"].append(config)
        translator.language = config.get("audio", {}).get("output", {}).get("language", "en")
        await send({"type": "session.updated", "session": config})
    elif kind == "session.input_audio_buffer.append":
        pcm = base64.b64decode(event.get("audio", ""))
        session["audio_bytes"] += len(pcm)
        await translator.feed(pcm)
    elif kind == "session.close":
        await send({"type": "session.closed"})
        await ws.close()
    else:
        err = {"type": "invalid_request_error", "code": "unknown_event", "message": str(kind)}
        await send({"type": "error", "error": err})


# --- client secrets (direct mode) --------------------------------------------------------
def _secrets_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        fault = state.fault
        if not state.bearer_ok(request.headers.get("Authorization"), allow_secret=False):
            return _error(
                401, fault.message("Incorrect API key provided (fake)."), "invalid_api_key"
            )
        if fault.error_after_s is not None:
            return _error(500, fault.message("fake: the server had an error"), "server_error")
        body = await request.json()
        session = body.get("session") or {}
        if not session.get("model"):
            return _error(400, "session.model is required", "missing_required_parameter")
        ttl = (body.get("expires_after") or {}).get("seconds", 600)
        value, expires = state.mint_secret(ttl)
        state.sessions.append({"kind": "client_secret", "request": body})
        locked = {**session, "type": "translation", "expires_at": expires}
        return web.json_response({"value": value, "expires_at": expires, "session": locked})

    return handle


# --- WebRTC calls (direct mode) ----------------------------------------------------------
def _calls_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not state.bearer_ok(auth, allow_secret=True) or not auth.startswith("Bearer ek_"):
            # Only minted secrets here: the page must never hold the real key.
            return _error(401, "A client secret (ek_…) is required (fake).", "invalid_api_key")
        offer = await request.text()
        if "m=audio" not in offer:
            return _error(400, "The SDP offer has no audio section.", "invalid_sdp")
        answer, call_id = await _answer(offer, state)
        state.sessions.append({"kind": "webrtc_call", "call_id": call_id})
        return web.Response(
            text=answer,
            status=201,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/translations/calls/{call_id}"},
        )

    return handle


async def _answer(offer: str, state: FakeState) -> tuple[str, str]:
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from av import AudioFrame

    call_id = "rtc_" + uuid.uuid4().hex[:12]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    heard = {"speech_until": 0.0}
    channels: list[Any] = []

    class ToneTrack(MediaStreamTrack):
        """Silence, or a tone while the caller spoke in the last second (the "translation")."""

        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._pts = 0
            self._start: float | None = None
            self._tone = np.frombuffer(_tone(48000, 0.02), dtype=np.int16)

        async def recv(self) -> AudioFrame:
            if self._start is None:
                self._start = time.monotonic()
            due = self._start + self._pts / 48000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            speaking = time.monotonic() < heard["speech_until"] + DELAY_S
            samples = self._tone if speaking else np.zeros(960, dtype=np.int16)
            frame = AudioFrame.from_ndarray(samples[None, :], layout="mono")
            frame.sample_rate, frame.pts = 48000, self._pts
            frame.time_base = fractions.Fraction(1, 48000)
            self._pts += 960
            return frame

    pc.addTrack(ToneTrack())

    @pc.on("datachannel")
    def on_channel(channel: Any) -> None:
        channels.append(channel)
        channel.send(json.dumps({"type": "session.created", "session": {"id": call_id}}))

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def listen() -> None:
            blocks = 0
            with contextlib.suppress(Exception):
                while True:
                    frame = await track.recv()
                    pcm = frame.to_ndarray().tobytes()
                    if _is_speech(pcm):
                        heard["speech_until"] = time.monotonic() + 1.0
                        blocks += 1
                        if blocks % 10 == 1:  # ~every 200 ms of speech
                            for ch in channels:
                                if ch.readyState == "open":
                                    for kind, text in (
                                        ("session.input_transcript.delta", "word "),
                                        ("session.output_transcript.delta", "word "),
                                    ):
                                        ch.send(json.dumps({"type": kind, "delta": text}))

        asyncio.ensure_future(listen())

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await pc.close()

    async def reaper() -> None:
        await asyncio.sleep(300)  # the fake never keeps a call longer than this
        await pc.close()

    asyncio.ensure_future(reaper())
    state.count("webrtc_calls")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp, call_id
