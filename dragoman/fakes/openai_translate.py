"""FAKE of OpenAI's realtime translation endpoints (the subset dragoman uses).

From OpenAI's public API reference ("Realtime translation", 2026-11), checked against the
``openai`` SDK's models (``dragoman.fakes.sdk``): every client event is parsed as a
``RealtimeTranslationClientEvent`` and every server event is built from the SDK's
``RealtimeTranslationServerEvent`` models.
- ``GET /v1/realtime/translations?model=…`` WebSocket, Bearer API key or client secret.
- ``POST /v1/realtime/translations/client_secrets`` (``ClientSecretCreateParams``) →
  ``RealtimeTranslationClientSecretCreateResponse``, the session config locked into the
  secret.
- ``POST /v1/realtime/translations/calls`` (Content-Type application/sdp, Bearer ``ek_…``)
  → SDP answer; translated audio returns on a media track, events on the data channel.

The "translation" is synthetic: every 200 ms of caller audio with speech energy becomes,
300 ms later, 200 ms of a tone plus the text "word". It recognises nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import fractions
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from openai.types.realtime import (
    RealtimeError,
    RealtimeErrorEvent,
    RealtimeTranslationInputTranscriptDeltaEvent,
    RealtimeTranslationOutputAudioDeltaEvent,
    RealtimeTranslationOutputTranscriptDeltaEvent,
    RealtimeTranslationSession,
    RealtimeTranslationSessionClosedEvent,
    RealtimeTranslationSessionCreatedEvent,
    RealtimeTranslationSessionUpdatedEvent,
)
from openai.types.realtime.realtime_translation_client_secret_create_response import (
    RealtimeTranslationClientSecretCreateResponse,
)
from pydantic import BaseModel

from dragoman.fakes import sdk
from dragoman.fakes.audio import is_speech, tone
from dragoman.fakes.openai_rest import error, guard
from dragoman.fakes.state import FakeState

log = logging.getLogger(__name__)

RATE = 24000
BLOCK_S = 0.2  # the real service emits 200 ms audio deltas
DELAY_S = 0.3  # fake "translation" latency
STALL_MAX_S = 120.0


TONE_B64 = base64.b64encode(tone(RATE, BLOCK_S)).decode()


def _event_id() -> str:
    return "evt_" + uuid.uuid4().hex[:12]


Send = Callable[[BaseModel], Awaitable[None]]


class FakeTranslator:
    """Turns caller audio into delayed synthetic translation events (SDK models)."""

    def __init__(self, send: Send, rate: int) -> None:
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
            if is_speech(block):
                first = not self._in_speech
                self._in_speech = True
                await self._send(
                    RealtimeTranslationInputTranscriptDeltaEvent(
                        type="session.input_transcript.delta",
                        event_id=_event_id(),
                        delta="word ",
                        elapsed_ms=0,
                    )
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
                RealtimeTranslationOutputAudioDeltaEvent(
                    type="session.output_audio.delta",
                    event_id=_event_id(),
                    delta=TONE_B64,
                    sample_rate=RATE,
                    channels=1,
                    format="pcm16",
                )
            )
            await self._send(
                RealtimeTranslationOutputTranscriptDeltaEvent(
                    type="session.output_transcript.delta", event_id=_event_id(), delta=text
                )
            )

    def stop(self) -> None:
        self._task.cancel()


def _error_event(kind: str, code: str, message: str) -> RealtimeErrorEvent:
    return RealtimeErrorEvent(
        type="error",
        event_id=_event_id(),
        error=RealtimeError(type=kind, code=code, message=message),
    )


def add_routes(app: web.Application, state: FakeState) -> None:
    app.router.add_get("/v1/realtime/translations", _ws_handler(state))
    app.router.add_post("/v1/realtime/translations/client_secrets", guard(state, _mint_secret))
    app.router.add_post("/v1/realtime/translations/calls", _calls_handler(state))


def new_session(model: str, config: dict[str, Any], ttl_s: float = 3600) -> dict[str, Any]:
    """A session as the fake keeps it: the fields of the SDK's ``RealtimeTranslationSession``."""
    return {
        "id": "sess_" + uuid.uuid4().hex[:12],
        "type": "translation",
        "model": model,
        "expires_at": int(time.time() + ttl_s),
        "audio": config.get("audio") or {},
    }


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def session_model(session: dict[str, Any]) -> RealtimeTranslationSession:
    return RealtimeTranslationSession.model_validate(session)


# --- WebSocket ---------------------------------------------------------------------------
def _ws_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        fault = state.fault
        if not state.bearer_ok(request.headers.get("Authorization"), allow_secret=True):
            state.count("ws_refused")
            return error(
                401, fault.message("Incorrect API key provided (fake)."), "invalid_api_key"
            )
        model = request.query.get("model")
        if not model:
            return error(400, "The model query parameter is required.", "missing_model")
        ws = web.WebSocketResponse(autoping=fault.stall_after_s is None, max_msg_size=2**22)
        await ws.prepare(request)
        session: dict[str, Any] = {
            "kind": "openai-translate-ws",
            "model": model,
            "updates": [],
            "audio_bytes": 0,
            "invalid": [],
        }
        state.sessions.append(session)
        state.count("ws_sessions")
        live = new_session(model, {})

        async def send(event: BaseModel) -> None:
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(sdk.openai_wire(event))

        translator = FakeTranslator(send, RATE)
        await send(
            RealtimeTranslationSessionCreatedEvent(
                type="session.created", event_id=_event_id(), session=session_model(live)
            )
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
                            await send(
                                _error_event(
                                    "rate_limit_error",
                                    "rate_limit_exceeded",
                                    fault.message("fake: slow down"),
                                )
                            )
                    else:
                        await send(
                            _error_event(
                                "server_error",
                                "session_expired",
                                fault.message("fake: the session failed"),
                            )
                        )
                        await ws.close()
                        break
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    event = sdk.openai_client_event(msg.data)
                except sdk.Invalid as e:
                    session["invalid"].append(str(e))
                    state.count("invalid_client_events")
                    await send(_error_event("invalid_request_error", "invalid_event", str(e)))
                    continue
                await _on_client_event(event, session, live, translator, send, ws)
        finally:
            translator.stop()
        return ws

    return handle


async def _on_client_event(
    event: Any,
    session: dict[str, Any],
    live: dict[str, Any],
    translator: FakeTranslator,
    send: Send,
    ws: web.WebSocketResponse,
) -> None:
    if event.type == "session.update":
        config = event.session.model_dump(exclude_unset=True)
        session["updates"].append(config)
        _merge(live, copy.deepcopy(config))
        translator.language = (live["audio"].get("output") or {}).get("language") or "en"
        await send(
            RealtimeTranslationSessionUpdatedEvent(
                type="session.updated", event_id=_event_id(), session=session_model(live)
            )
        )
    elif event.type == "session.input_audio_buffer.append":
        pcm = base64.b64decode(event.audio)
        session["audio_bytes"] += len(pcm)
        await translator.feed(pcm)
    elif event.type == "session.close":
        await send(
            RealtimeTranslationSessionClosedEvent(type="session.closed", event_id=_event_id())
        )
        await ws.close()


# --- client secrets (direct mode) --------------------------------------------------------
async def _mint_secret(request: web.Request, state: FakeState) -> web.Response:
    raw = await request.json()
    try:
        body = sdk.openai_secret_request(raw)
    except sdk.Invalid as e:
        state.count("invalid_client_events")
        return error(400, str(e), "invalid_request")
    session = body["session"]
    ttl = (body.get("expires_after") or {}).get("seconds", 600)
    if not 10 <= ttl <= 7200:
        return error(400, "expires_after.seconds must be 10..7200", "invalid_value")
    value, expires = state.mint_secret(ttl)
    state.sessions.append({"kind": "client_secret", "request": raw})
    locked = new_session(session["model"], session)
    locked["expires_at"] = expires
    state.locked[value] = locked
    answer = RealtimeTranslationClientSecretCreateResponse(
        value=value, expires_at=expires, session=session_model(locked)
    )
    return web.Response(text=sdk.openai_wire(answer), content_type="application/json")


# --- WebRTC calls (direct mode) ----------------------------------------------------------
def _calls_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not state.bearer_ok(auth, allow_secret=True) or not auth.startswith("Bearer ek_"):
            # Only minted secrets here: the page must never hold the real key.
            return error(401, "A client secret (ek_…) is required (fake).", "invalid_api_key")
        offer = await request.text()
        if "m=audio" not in offer:
            return error(400, "The SDP offer has no audio section.", "invalid_sdp")
        locked = state.locked.get(auth.removeprefix("Bearer ").strip(), new_session("?", {}))
        answer, call_id = await _answer(offer, state, locked)
        state.sessions.append({"kind": "webrtc_call", "call_id": call_id})
        return web.Response(
            text=answer,
            status=201,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/translations/calls/{call_id}"},
        )

    return handle


def _transcript_pair() -> list[BaseModel]:
    return [
        RealtimeTranslationInputTranscriptDeltaEvent(
            type="session.input_transcript.delta", event_id=_event_id(), delta="word "
        ),
        RealtimeTranslationOutputTranscriptDeltaEvent(
            type="session.output_transcript.delta", event_id=_event_id(), delta="word "
        ),
    ]


async def _answer(offer: str, state: FakeState, locked: dict[str, Any]) -> tuple[str, str]:
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
            self._tone = np.frombuffer(tone(48000, 0.02), dtype=np.int16)

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
        created = RealtimeTranslationSessionCreatedEvent(
            type="session.created", event_id=_event_id(), session=session_model(locked)
        )
        channel.send(sdk.openai_wire(created))

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def listen() -> None:
            blocks = 0
            with contextlib.suppress(Exception):
                while True:
                    frame = await track.recv()
                    pcm = frame.to_ndarray().tobytes()
                    if is_speech(pcm):
                        heard["speech_until"] = time.monotonic() + 1.0
                        blocks += 1
                        if blocks % 10 == 1:  # ~every 200 ms of speech
                            for ch in channels:
                                if ch.readyState == "open":
                                    for event in _transcript_pair():
                                        ch.send(sdk.openai_wire(event))

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
