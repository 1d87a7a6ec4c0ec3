"""``openai-translate``: OpenAI's realtime translation model over its server-side WebSocket.

Protocol (OpenAI API reference, "Realtime translation", 2026-11):
``wss://…/v1/realtime/translations?model=gpt-realtime-translate`` with a Bearer key; the
client sends ``session.update`` (output language, input transcription),
``session.input_audio_buffer.append`` (base64 24 kHz PCM16, silence included) and
``session.close``; the server sends ``session.created`` / ``session.updated``,
``session.input_transcript.delta`` (source), ``session.output_transcript.delta``
(translation), ``session.output_audio.delta`` (200 ms of 24 kHz PCM16), ``session.closed``
and ``error``. There is no response lifecycle: translation follows the audio stream.

Pipecat has no service for this endpoint (its OpenAI realtime service drives the assistant
endpoint), so the wire format is written here on top of ``streaming.py``.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from dragoman.config import Settings
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.providers.streaming import ProviderEvent, StreamingInterpretation

RATE = 24000
# Error codes after which the same session cannot go on (the others are recoverable).
FATAL_CODES = {"invalid_api_key", "insufficient_quota", "model_not_found", "session_expired"}


def websocket_base(rest_base: str) -> str:
    """``https://host/v1`` → ``wss://host/v1`` (and http → ws for local fakes)."""
    if rest_base.startswith("https://"):
        return "wss://" + rest_base[len("https://") :]
    if rest_base.startswith("http://"):
        return "ws://" + rest_base[len("http://") :]
    return rest_base


def session_config(settings: Settings, pair: LanguagePair) -> dict[str, Any]:
    """The translation session: also used, locked, for direct-mode client secrets."""
    return {
        "audio": {
            "input": {"transcription": {"model": settings.openai_input_transcription_model}},
            "output": {"language": pair.target},
        }
    }


class OpenAITranslateWire:
    name = "openai-translate"
    input_rate = RATE

    def __init__(self, settings: Settings) -> None:
        if settings.openai_api_key is None:
            raise ValueError("openai-translate needs DRAGOMAN_OPENAI_API_KEY")
        self._settings = settings
        self._key = settings.openai_api_key.get_secret_value()

    def url(self) -> str:
        query = urlencode({"model": self._settings.openai_translate_model})
        return f"{websocket_base(self._settings.openai_base_url)}/realtime/translations?{query}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def setup(self, pair: LanguagePair) -> list[dict[str, Any]]:
        return [{"type": "session.update", "session": session_config(self._settings, pair)}]

    def audio(self, pcm16: bytes) -> dict[str, Any]:
        return {
            "type": "session.input_audio_buffer.append",
            "audio": base64.b64encode(pcm16).decode(),
        }

    def switch(self, pair: LanguagePair) -> list[dict[str, Any]] | None:
        return self.setup(pair)

    def close(self) -> dict[str, Any] | None:
        return {"type": "session.close"}

    def parse(self, event: dict[str, Any]) -> list[ProviderEvent]:
        kind = event.get("type")
        if kind == "session.updated":
            return [ProviderEvent("ready")]
        if kind == "session.output_audio.delta":
            rate = int(event.get("sample_rate") or RATE)
            return [ProviderEvent("audio", audio=base64.b64decode(event["delta"]), rate=rate)]
        if kind == "session.input_transcript.delta":
            return [ProviderEvent("source_text", text=event.get("delta", ""))]
        if kind == "session.output_transcript.delta":
            return [ProviderEvent("translation_text", text=event.get("delta", ""))]
        if kind == "session.closed":
            return [ProviderEvent("closed")]
        if kind == "error":
            err = event.get("error") or {}
            theirs = str(err.get("code") or err.get("type") or "unknown")
            ours = "provider_refused" if theirs == "invalid_api_key" else "provider_error"
            text = f"{theirs}: {err.get('message', '')}"  # their code and words, for the log
            return [ProviderEvent("error", text=text, code=ours, fatal=theirs in FATAL_CODES)]
        return []  # session.created and anything newer than this code


def build(ctx: CallContext) -> StreamingInterpretation:
    return StreamingInterpretation(ctx, OpenAITranslateWire(ctx.settings))
