"""FAKE of OpenAI's realtime transcription session (the subset ``openai-cascade`` uses in
simultaneous mode).

From OpenAI's public API reference (Realtime API, transcription sessions), checked against
the ``openai`` SDK's models (``dragoman.fakes.sdk``): every client event is parsed as a
``RealtimeClientEvent`` (unknown fields refused) and every server event is built from the
SDK's server event models.
- ``GET /v1/realtime?intent=transcription`` WebSocket, Bearer API key.
- ``session.update`` with a ``type: "transcription"`` session → ``session.updated``.
- ``input_audio_buffer.append``: base64 24 kHz PCM16. Every ``WORD_S`` of it with speech
  energy becomes one word, sent at once as a
  ``conversation.item.input_audio_transcription.delta`` of the open item: deltas are timed
  against the audio received, as a streaming model's are. The words are ``word1 word2 …``,
  every ``COMMA_EVERY``-th with a comma (a clause boundary).
- ``input_audio_buffer.commit`` → ``input_audio_buffer.committed`` then
  ``conversation.item.input_audio_transcription.completed`` with the item's whole transcript
  (an ``error`` ``input_audio_buffer_commit_empty`` when nothing was appended since).
It recognises nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferCommittedEvent,
    RealtimeError,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)
from pydantic import BaseModel

from dragoman.fakes import sdk
from dragoman.fakes.audio import is_speech
from dragoman.fakes.openai_rest import error
from dragoman.fakes.state import FakeState

RATE = 24000
WORD_S = 0.3  # one "word" per this much speech
COMMA_EVERY = 4
STALL_MAX_S = 120.0


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _error_event(kind: str, code: str, message: str) -> RealtimeErrorEvent:
    return RealtimeErrorEvent(
        type="error",
        event_id=_id("evt"),
        error=RealtimeError(type=kind, code=code, message=message),
    )


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


Send = Callable[[BaseModel], Awaitable[None]]


class FakeTranscriber:
    """Words for the speech in the audio buffer, as it arrives; an item per commit."""

    def __init__(self, send: Send, state: FakeState, record: dict[str, Any]) -> None:
        self._send = send
        self._state = state
        self._record = record
        self._block = int(RATE * WORD_S) * 2
        self._buf = bytearray()
        self._appended = 0  # bytes since the last commit
        self._item: str | None = None
        self._words: list[str] = []  # the open item's deltas
        self._n = 0
        self._previous: str | None = None

    async def feed(self, pcm16: bytes) -> None:
        self._buf += pcm16
        self._appended += len(pcm16)
        while len(self._buf) >= self._block:
            block = bytes(self._buf[: self._block])
            del self._buf[: self._block]
            if is_speech(block):
                await self._word()

    async def _word(self) -> None:
        if self._item is None:
            self._item = _id("item")
        self._n += 1
        word = f"word{self._n}" + ("," if self._n % COMMA_EVERY == 0 else "")
        delta = word if not self._words else f" {word}"
        self._words.append(delta)
        self._record["words"] += 1
        self._state.transcribing[self._item] = len(self._words)
        await self._send(
            ConversationItemInputAudioTranscriptionDeltaEvent(
                type="conversation.item.input_audio_transcription.delta",
                event_id=_id("evt"),
                item_id=self._item,
                content_index=0,
                delta=delta,
            )
        )

    async def commit(self) -> None:
        if not self._appended:
            await self._send(
                _error_event(
                    "invalid_request_error",
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: the buffer is empty.",
                )
            )
            return
        seconds = self._appended / 2 / RATE
        item, transcript = self._item or _id("item"), "".join(self._words)
        self._state.transcribing.pop(item, None)
        self._buf.clear()
        self._appended, self._item, self._words = 0, None, []
        self._record["commits"] += 1
        await self._send(
            InputAudioBufferCommittedEvent(
                type="input_audio_buffer.committed",
                event_id=_id("evt"),
                item_id=item,
                previous_item_id=self._previous,
            )
        )
        self._previous = item
        await self._send(
            ConversationItemInputAudioTranscriptionCompletedEvent.model_validate(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": _id("evt"),
                    "item_id": item,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": {"type": "duration", "seconds": round(seconds, 3)},
                }
            )
        )

    def stop(self) -> None:
        if self._item is not None:
            self._state.transcribing.pop(self._item, None)
            self._item = None


def add_routes(app: web.Application, state: FakeState) -> None:
    app.router.add_get("/v1/realtime", _ws_handler(state))


def _session_model(live: dict[str, Any]) -> RealtimeTranscriptionSessionCreateRequest:
    return RealtimeTranscriptionSessionCreateRequest.model_validate(live)


def _ws_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        fault = state.fault
        if not state.bearer_ok(request.headers.get("Authorization"), allow_secret=False):
            state.count("ws_refused")
            return error(
                401, fault.message("Incorrect API key provided (fake)."), "invalid_api_key"
            )
        if request.query.get("intent") != "transcription":
            return error(400, "The fake serves transcription sessions only.", "unsupported")
        ws = web.WebSocketResponse(autoping=fault.stall_after_s is None, max_msg_size=2**22)
        await ws.prepare(request)
        record: dict[str, Any] = {
            "kind": "openai-transcription-ws",
            "updates": [],
            "audio_bytes": 0,
            "words": 0,
            "commits": 0,
            "invalid": [],
            "closed": False,
        }
        state.sessions.append(record)
        state.count("transcription_ws_sessions")
        live: dict[str, Any] = {"type": "transcription"}

        async def send(event: BaseModel) -> None:
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(sdk.openai_wire(event))

        transcriber = FakeTranscriber(send, state, record)
        await send(
            SessionCreatedEvent(
                type="session.created", event_id=_id("evt"), session=_session_model(live)
            )
        )
        t0 = asyncio.get_running_loop().time()
        try:
            async for msg in ws:
                elapsed = asyncio.get_running_loop().time() - t0
                if fault.drop_after_s is not None and elapsed >= fault.drop_after_s:
                    request.transport.close()  # abrupt: no close frame
                    break
                if fault.stall_after_s is not None and elapsed >= fault.stall_after_s:
                    await asyncio.sleep(STALL_MAX_S)  # read nothing, answer no pings
                    break
                if fault.error_after_s is not None and elapsed >= fault.error_after_s:
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
                    event = sdk.openai_realtime_client_event(msg.data)
                    if event.type == "session.update" and event.session.type != "transcription":
                        raise sdk.Invalid("session.type: only 'transcription' sessions here")
                except sdk.Invalid as e:
                    record["invalid"].append(str(e))
                    state.count("invalid_client_events")
                    await send(_error_event("invalid_request_error", "invalid_event", str(e)))
                    continue
                if event.type == "session.update":
                    config = event.session.model_dump(exclude_unset=True)
                    record["updates"].append(config)
                    _merge(live, copy.deepcopy(config))
                    await send(
                        SessionUpdatedEvent(
                            type="session.updated",
                            event_id=_id("evt"),
                            session=_session_model(live),
                        )
                    )
                elif event.type == "input_audio_buffer.append":
                    pcm = base64.b64decode(event.audio)
                    record["audio_bytes"] += len(pcm)
                    await transcriber.feed(pcm)
                elif event.type == "input_audio_buffer.commit":
                    await transcriber.commit()
                else:  # a conversation event: not part of a transcription session
                    record["invalid"].append(f"{event.type} in a transcription session")
                    state.count("invalid_client_events")
                    await send(_error_event("invalid_request_error", "invalid_event", event.type))
        finally:
            transcriber.stop()
            record["closed"] = True
        return ws

    return handle
