"""How the cloud providers' sessions are configured through their official SDKs: the SDK
clients and the session each call opens. Pure configuration, no Pipecat: the agent's
providers (``openai_translate``, ``gemini_live``) open these sessions, and the api process
(``api.direct``) mints direct-mode credentials locked to the very same ones.
"""

from __future__ import annotations

from typing import Any

from google import genai
from google.genai import types
from openai import AsyncOpenAI
from openai.types.realtime.realtime_translation_session_update_request import (
    Audio,
    AudioInput,
    AudioInputTranscription,
    AudioOutput,
    RealtimeTranslationSessionUpdateRequest,
)

from dragoman.config import Settings
from dragoman.languages import LanguagePair

# --- openai-translate ---------------------------------------------------------------------
OPENAI_TRANSLATE = "openai-translate"


def openai_client(settings: Settings, *, timeout: float | None = None) -> AsyncOpenAI:
    """The SDK client for this server's key and base URL; no SDK retries: a call has a
    deadline, and reconnecting is our policy."""
    if settings.openai_api_key is None:
        raise ValueError(f"{OPENAI_TRANSLATE} needs DRAGOMAN_OPENAI_API_KEY")
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=timeout if timeout is not None else settings.provider_connect_timeout_s,
    )


def openai_translation_session(
    settings: Settings, pair: LanguagePair
) -> RealtimeTranslationSessionUpdateRequest:
    """The translation session (the SDK's model): also used, locked, for direct-mode client
    secrets."""
    return RealtimeTranslationSessionUpdateRequest(
        audio=Audio(
            input=AudioInput(
                transcription=AudioInputTranscription(
                    model=settings.openai_input_transcription_model
                )
            ),
            output=AudioOutput(language=pair.target),
        )
    )


def openai_translation_param(settings: Settings, pair: LanguagePair) -> dict[str, Any]:
    """The session as the SDK's request parameter (a plain dict of set fields)."""
    return openai_translation_session(settings, pair).model_dump(exclude_none=True)


# --- gemini-live-translate ----------------------------------------------------------------
GEMINI_LIVE_TRANSLATE = "gemini-live-translate"
LIVE_API_VERSION = "v1beta"
TOKEN_API_VERSION = "v1alpha"  # ephemeral tokens and the constrained endpoint


def gemini_http_base(url: str) -> str:
    """The SDK's base URL is an HTTP(S) one (it derives ``wss://`` for the Live API); a
    WebSocket URL in the setting is accepted for older configurations."""
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    return url.rstrip("/")


def gemini_client(
    settings: Settings, *, api_version: str = LIVE_API_VERSION, **args: Any
) -> genai.Client:
    """The SDK client for this server's key and base URL. ``args``: options for the SDK's
    WebSocket (``websockets.connect``) — only for clients that open Live sessions."""
    if settings.gemini_api_key is None:
        raise ValueError(f"{GEMINI_LIVE_TRANSLATE} needs DRAGOMAN_GEMINI_API_KEY")
    options = types.HttpOptions(
        base_url=gemini_http_base(settings.gemini_base_url),
        api_version=api_version,
        timeout=int(settings.provider_connect_timeout_s * 1000),
        async_client_args=args or None,
    )
    return genai.Client(api_key=settings.gemini_api_key.get_secret_value(), http_options=options)


def gemini_model_name(settings: Settings) -> str:
    return f"models/{settings.gemini_model}"


def gemini_live_config(pair: LanguagePair) -> types.LiveConnectConfig:
    """The session: translated speech into ``pair.target`` plus both transcripts. Also what a
    direct-mode token locks."""
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        translation_config=types.TranslationConfig(
            target_language_code=pair.target, echo_target_language=True
        ),
    )
