"""The cascade's streamed transcription: an OpenAI realtime transcription session, through
the ``openai`` SDK.

``AsyncOpenAI.realtime.connect(extra_query={"intent": "transcription"})`` opens the realtime
WebSocket for transcription (the SDK builds the URL from the client's base URL and
authenticates). We send the typed client events ``session.update`` (a
``RealtimeTranscriptionSessionCreateRequest``: 24 kHz PCM16 in, the transcription model and
language, no server turn detection), ``input_audio_buffer.append`` (the caller's audio,
silence included, as it comes) and ``input_audio_buffer.commit`` (our VAD's end of speech
closes the item being transcribed), and read the SDK's ``RealtimeServerEvent`` union:
``session.updated`` → ready, ``conversation.item.input_audio_transcription.delta`` /
``.completed`` / ``.failed``, ``error``.

The SDK's reconnection stays off: the policy (one reopen, the page told in our words) is
the caller's (``cascade_simultaneous``).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import openai
import websockets
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)

from dragoman.config import Settings
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers import openai_realtime
from dragoman.pipeline.providers.sdk_sessions import openai_client
from dragoman.pipeline.providers.streaming import websocket_options

RATE = 24000  # the only PCM rate the realtime API takes
INTENT = {"intent": "transcription"}
FATAL_CODES = {"invalid_api_key", "insufficient_quota", "model_not_found", "session_expired"}
# Committing an empty buffer (our VAD ended speech right after a commit): nothing lost.
BENIGN_CODES = {"input_audio_buffer_commit_empty"}


def transcription_session(settings: Settings, pair: LanguagePair) -> dict[str, Any]:
    """The ``session.update`` payload, built (and so checked) with the SDK's model. No turn
    detection: our own VAD commits the audio, so the items follow the caller's pauses."""
    model = settings.openai_stream_transcription_model
    transcription: dict[str, Any] = {"model": model, "language": pair.source}
    if model.startswith("gpt-realtime-whisper"):  # the only model that takes a delay
        transcription["delay"] = settings.openai_stream_transcription_delay
    session = RealtimeTranscriptionSessionCreateRequest.model_validate(
        {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": transcription,
                    "turn_detection": None,
                }
            },
        }
    )
    return session.model_dump(exclude_unset=True)


@dataclass
class StreamEvent:
    kind: Literal["ready", "delta", "completed", "failed", "error"]
    item: str = ""
    text: str = ""  # a delta, a transcript, or (errors) the provider's words for the log
    code: str = ""  # errors: the provider's code
    fatal: bool = False


def events_of(event: Any) -> list[StreamEvent]:
    """Ours for one of the SDK's server events (anything else: none)."""
    kind = getattr(event, "type", None)
    if kind == "session.updated":
        return [StreamEvent("ready")]
    if kind == "conversation.item.input_audio_transcription.delta":
        return [StreamEvent("delta", item=event.item_id, text=event.delta or "")]
    if kind == "conversation.item.input_audio_transcription.completed":
        return [StreamEvent("completed", item=event.item_id, text=event.transcript or "")]
    if kind == "conversation.item.input_audio_transcription.failed":
        err = event.error
        words = f"{getattr(err, 'code', None)}: {getattr(err, 'message', None)}"
        return [StreamEvent("failed", item=event.item_id, text=words)]
    if kind == "error":
        err = event.error
        code = str(getattr(err, "code", None) or getattr(err, "type", None) or "unknown")
        words = f"{code}: {getattr(err, 'message', '')}"
        return [StreamEvent("error", text=words, code=code, fatal=code in FATAL_CODES)]
    return []  # session.created, input_audio_buffer.committed, and anything newer


class TranscriptionConnection:
    def __init__(self, connection: Any, settings: Settings) -> None:
        self._conn = connection  # openai's AsyncRealtimeConnection
        self._settings = settings

    async def receive(self) -> list[StreamEvent]:
        return events_of(await openai_realtime.recv(self._conn))

    async def update(self, pair: LanguagePair) -> None:
        session = transcription_session(self._settings, pair)
        await self._conn.session.update(session=cast(Any, session))

    async def append(self, pcm16: bytes) -> None:
        await self._conn.input_audio_buffer.append(audio=base64.b64encode(pcm16).decode())

    async def commit(self) -> None:
        await self._conn.input_audio_buffer.commit()

    async def close(self) -> None:
        with contextlib.suppress(openai.OpenAIError, websockets.ConnectionClosed, OSError):
            await self._conn.close()


class TranscriptionStream:
    """Opens realtime transcription sessions for one call."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = openai_client(settings)

    @contextlib.asynccontextmanager
    async def connect(
        self, pair: LanguagePair, timeout: float
    ) -> AsyncIterator[TranscriptionConnection]:
        manager = self._client.realtime.connect(
            extra_query=INTENT,
            websocket_connection_options=cast(
                Any, websocket_options(timeout, self._settings.provider_ping_interval_s)
            ),
        )
        connection = await openai_realtime.enter(manager)
        conn = TranscriptionConnection(connection, self._settings)
        try:
            await conn.update(pair)
            yield conn
        finally:
            await conn.close()
