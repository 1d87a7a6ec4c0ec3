"""``openai-translate``: OpenAI's realtime translation model, through the ``openai`` SDK.

``AsyncOpenAI.realtime.translations.connect(model=…)`` opens the translation WebSocket (the
SDK builds the URL from the client's base URL and authenticates); we send the typed client
events ``session.update`` (output language, input transcription — a
``RealtimeTranslationSessionUpdateRequest``), ``session.input_audio_buffer.append``
(base64 24 kHz PCM16, silence included) and ``session.close``, and map the SDK's
``RealtimeTranslationServerEvent`` union onto our ``ProviderEvent``: ``session.updated`` →
ready, ``session.output_audio.delta`` → audio, ``session.input_transcript.delta`` /
``session.output_transcript.delta`` → captions, ``session.closed``, ``error``. There is no
response lifecycle: translation follows the audio stream.

The SDK's own reconnection is off (``on_reconnecting`` unset): our policy (one reopen, the
page told in our words) lives in ``streaming.py``.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import openai
import websockets
from openai.types.realtime import RealtimeTranslationServerEvent

from dragoman.config import Settings
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers import openai_realtime
from dragoman.pipeline.providers.base import CallContext

# The SDK client and session are pure configuration, shared with the api's direct mode.
from dragoman.pipeline.providers.sdk_sessions import OPENAI_TRANSLATE as NAME
from dragoman.pipeline.providers.sdk_sessions import openai_client, openai_translation_param
from dragoman.pipeline.providers.streaming import (
    ProviderEvent,
    SessionLost,
    StreamingInterpretation,
    websocket_options,
)

RATE = 24000
# Error codes after which the same session cannot go on (the others are recoverable).
FATAL_CODES = {"invalid_api_key", "insufficient_quota", "model_not_found", "session_expired"}


def events_of(event: RealtimeTranslationServerEvent) -> list[ProviderEvent]:
    """Our events for one of the SDK's server events."""
    kind = getattr(event, "type", None)
    if kind == "session.updated":
        return [ProviderEvent("ready")]
    if kind == "session.output_audio.delta":
        rate = int(getattr(event, "sample_rate", None) or RATE)
        return [ProviderEvent("audio", audio=base64.b64decode(event.delta), rate=rate)]
    if kind == "session.input_transcript.delta":
        return [ProviderEvent("source_text", text=event.delta or "")]
    if kind == "session.output_transcript.delta":
        return [ProviderEvent("translation_text", text=event.delta or "")]
    if kind == "session.closed":
        return [ProviderEvent("closed")]
    if kind == "error":
        err = event.error
        theirs = str(getattr(err, "code", None) or getattr(err, "type", None) or "unknown")
        ours = "provider_refused" if theirs == "invalid_api_key" else "provider_error"
        text = f"{theirs}: {getattr(err, 'message', '')}"  # their code and words, for the log
        return [ProviderEvent("error", text=text, code=ours, fatal=theirs in FATAL_CODES)]
    return []  # session.created and anything newer than this code


class OpenAITranslateSession:
    def __init__(self, connection: Any, settings: Settings) -> None:
        self._conn = connection  # openai's AsyncTranslationsConnection
        self._settings = settings

    async def receive(self) -> list[ProviderEvent]:
        event = await openai_realtime.recv(self._conn)
        return events_of(cast(RealtimeTranslationServerEvent, event))

    async def send_audio(self, pcm16: bytes) -> None:
        await self._conn.session.input_audio_buffer.append(audio=base64.b64encode(pcm16).decode())

    async def switch(self, pair: LanguagePair) -> bool:
        try:
            await self._conn.session.update(session=openai_translation_param(self._settings, pair))
        except openai.OpenAIError as e:
            raise SessionLost(f"{type(e).__name__}: {e}") from e
        return True  # the output language changes on the open session

    async def close(self) -> None:
        with contextlib.suppress(openai.OpenAIError, websockets.ConnectionClosed, OSError):
            await self._conn.session.close()
        await self._conn.close()


class OpenAITranslate:
    name = NAME
    input_rate = RATE

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = openai_client(settings)

    @contextlib.asynccontextmanager
    async def connect(
        self, pair: LanguagePair, timeout: float
    ) -> AsyncIterator[OpenAITranslateSession]:
        manager = self._client.realtime.translations.connect(
            model=self._settings.openai_translate_model,
            websocket_connection_options=cast(
                Any, websocket_options(timeout, self._settings.provider_ping_interval_s)
            ),
        )
        connection = await openai_realtime.enter(manager)
        session = OpenAITranslateSession(connection, self._settings)
        try:
            await connection.session.update(session=openai_translation_param(self._settings, pair))
            yield session
        finally:
            with contextlib.suppress(Exception):
                await connection.close()


def speech_provider(settings: Settings) -> OpenAITranslate:
    return OpenAITranslate(settings)


def build(ctx: CallContext) -> StreamingInterpretation:
    return StreamingInterpretation(ctx, speech_provider(ctx.settings))
