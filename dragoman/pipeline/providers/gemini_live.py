"""``gemini-live-translate``: Gemini Live's speech translation, through the ``google-genai`` SDK.

``genai.Client(...).aio.live.connect(model, config=LiveConnectConfig(...))`` opens the Live
API WebSocket, sends the setup built from our config (AUDIO responses, input and output
transcription, ``TranslationConfig(target_language_code, echo_target_language)``) and
returns once the server answered ``setupComplete``. Caller audio goes up with
``send_realtime_input(audio=Blob(16 kHz PCM16))``; the SDK's ``LiveServerMessage`` brings
translated audio (``server_content.model_turn.parts[].inline_data``, 24 kHz PCM16),
``input_transcription`` / ``output_transcription`` text and ``go_away``. The setup is fixed
for a connection, so a language switch reconnects.

Pipecat's Gemini Live service drives the conversational assistant (tools, context, turns);
a translation session is a different, smaller configuration, so the SDK is used directly.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import websockets
from google.genai import errors, types

from dragoman.config import Settings
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.base import CallContext, ProviderError

# The SDK client and session are pure configuration, shared with the api's direct mode.
from dragoman.pipeline.providers.sdk_sessions import GEMINI_LIVE_TRANSLATE as NAME
from dragoman.pipeline.providers.sdk_sessions import (
    gemini_client,
    gemini_live_config,
    gemini_model_name,
)
from dragoman.pipeline.providers.streaming import (
    ProviderEvent,
    SessionLost,
    StreamingInterpretation,
    websocket_options,
)

log = logging.getLogger(__name__)

RATE_IN = 16000
RATE_OUT = 24000
MIME_IN = f"audio/pcm;rate={RATE_IN}"
RATE = re.compile(r"rate=(\d+)")
POLICY_VIOLATION = 1008  # the Live API's close code for a bad key or setup


def events_of(msg: types.LiveServerMessage) -> list[ProviderEvent]:
    """Our events for one of the SDK's server messages."""
    out: list[ProviderEvent] = []
    if msg.setup_complete is not None:
        out.append(ProviderEvent("ready"))
    if msg.go_away is not None:
        left = msg.go_away.time_left or "soon"
        out.append(ProviderEvent("error", code="provider_closing", text=f"goAway in {left}"))
    content = msg.server_content
    if content is None:
        return out
    if content.input_transcription is not None and content.input_transcription.text:
        out.append(ProviderEvent("source_text", text=content.input_transcription.text))
    for part in (content.model_turn.parts or []) if content.model_turn else []:
        blob = part.inline_data
        if blob is not None and blob.data:
            match = RATE.search(blob.mime_type or "")
            rate = int(match.group(1)) if match else RATE_OUT
            out.append(ProviderEvent("audio", audio=blob.data, rate=rate))
    if content.output_transcription is not None and content.output_transcription.text:
        out.append(ProviderEvent("translation_text", text=content.output_transcription.text))
    return out


def _closed(e: errors.APIError) -> Exception:
    """The SDK reports a closed Live socket as an APIError carrying the close code."""
    detail = f"closed with {e.code}: {e.message or e.details}"
    if e.code == POLICY_VIOLATION:  # a bad key or setup: retrying cannot help
        return ProviderError("provider_refused", detail)
    return SessionLost(detail)


class GeminiLiveSession:
    def __init__(self, session: Any) -> None:
        self._session = session  # google.genai.live.AsyncSession
        self._it: AsyncIterator[types.LiveServerMessage] | None = None
        self._ready_told = False

    async def receive(self) -> list[ProviderEvent]:
        if not self._ready_told:  # connect() returned after the server's setupComplete
            self._ready_told = True
            return [ProviderEvent("ready")]
        if self._it is None:
            # The SDK's receive() ends after each completed turn: start the next one.
            self._it = self._session.receive()
        try:
            msg = await anext(self._it)
        except StopAsyncIteration:
            self._it = None
            return []
        except errors.APIError as e:
            raise _closed(e) from e
        except ValueError as e:  # a message that is not JSON: skip it
            log.warning("%s sent an unreadable message: %s", NAME, e)
            self._it = None
            return []
        return events_of(msg)

    async def send_audio(self, pcm16: bytes) -> None:
        await self._session.send_realtime_input(audio=types.Blob(data=pcm16, mime_type=MIME_IN))

    async def switch(self, pair: LanguagePair) -> bool:
        return False  # the setup cannot change on an open connection: reconnect

    async def close(self) -> None:
        await self._session.close()  # closing the socket ends the session


class GeminiLive:
    name = NAME
    input_rate = RATE_IN

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key_checked = gemini_client(settings)  # fails early without a key

    @contextlib.asynccontextmanager
    async def connect(self, pair: LanguagePair, timeout: float) -> AsyncIterator[GeminiLiveSession]:
        ping_s = self._settings.provider_ping_interval_s
        sdk = gemini_client(self._settings, **websocket_options(timeout, ping_s))
        async with contextlib.AsyncExitStack() as stack:
            try:
                session = await stack.enter_async_context(
                    sdk.aio.live.connect(
                        model=gemini_model_name(self._settings), config=gemini_live_config(pair)
                    )
                )
            except websockets.InvalidStatus as e:
                status = e.response.status_code
                code = "provider_refused" if status in (401, 403) else "provider_unavailable"
                raise ProviderError(code, f"HTTP {status} at the WebSocket upgrade") from e
            except errors.APIError as e:
                raise _closed(e) from e
            yield GeminiLiveSession(session)


def speech_provider(settings: Settings) -> GeminiLive:
    return GeminiLive(settings)


def build(ctx: CallContext) -> StreamingInterpretation:
    return StreamingInterpretation(ctx, speech_provider(ctx.settings))
