"""``gemini-live-translate``: Gemini Live's speech translation over its WebSocket API.

Protocol (Google AI for Developers, "Live translation with Gemini Live API" and the Live API
WebSocket reference, 2026-11): connect to
``wss://…/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent``
with the key in ``x-goog-api-key``; send one ``setup`` message (model, AUDIO response,
input/output transcription, ``translationConfig.targetLanguageCode``); the server answers
``setupComplete``. Caller audio goes up as ``realtimeInput.audio`` (base64 PCM16, 16 kHz);
``serverContent`` brings translated audio (``modelTurn.parts[].inlineData``, 24 kHz PCM16)
and ``inputTranscription`` / ``outputTranscription`` text; ``goAway`` warns of a close.
The setup is fixed for a connection, so a language switch reconnects.

Pipecat's Gemini Live service drives the conversational assistant through the google-genai
SDK (tools, context, turns); translation sessions are a different, smaller configuration,
so the wire format is written here on top of ``streaming.py``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from dragoman.config import Settings
from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.providers.streaming import ProviderEvent, StreamingInterpretation

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
RATE_IN = 16000
RATE = re.compile(r"rate=(\d+)")


def setup_message(settings: Settings, pair: LanguagePair) -> dict[str, Any]:
    return {
        "setup": {
            "model": f"models/{settings.gemini_model}",
            "generationConfig": {"responseModalities": ["AUDIO"]},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "translationConfig": {"targetLanguageCode": pair.target, "echoTargetLanguage": True},
        }
    }


class GeminiLiveWire:
    name = "gemini-live-translate"
    input_rate = RATE_IN

    def __init__(self, settings: Settings) -> None:
        if settings.gemini_api_key is None:
            raise ValueError("gemini-live-translate needs DRAGOMAN_GEMINI_API_KEY")
        self._settings = settings
        self._key = settings.gemini_api_key.get_secret_value()

    def url(self) -> str:
        return self._settings.gemini_base_url.rstrip("/") + PATH

    def headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._key}  # a header keeps the key out of URLs and logs

    def setup(self, pair: LanguagePair) -> list[dict[str, Any]]:
        return [setup_message(self._settings, pair)]

    def audio(self, pcm16: bytes) -> dict[str, Any]:
        data = base64.b64encode(pcm16).decode()
        return {"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={RATE_IN}"}}}

    def switch(self, pair: LanguagePair) -> list[dict[str, Any]] | None:
        return None  # the setup cannot change on an open connection: reconnect

    def close(self) -> dict[str, Any] | None:
        return None  # closing the socket ends the session

    def parse(self, event: dict[str, Any]) -> list[ProviderEvent]:
        if "setupComplete" in event:
            return [ProviderEvent("ready")]
        if "goAway" in event:
            left = (event["goAway"] or {}).get("timeLeft", "soon")
            return [ProviderEvent("error", code="provider_closing", text=f"goAway in {left}")]
        if "error" in event:
            err = event["error"] or {}
            text = str(err.get("message", err))  # their words, for the log
            return [ProviderEvent("error", code="provider_error", text=text)]
        content = event.get("serverContent")
        if not isinstance(content, dict):
            return []
        out: list[ProviderEvent] = []
        if text := (content.get("inputTranscription") or {}).get("text"):
            out.append(ProviderEvent("source_text", text=text))
        for part in (content.get("modelTurn") or {}).get("parts", []):
            inline = part.get("inlineData") or {}
            if inline.get("data"):
                match = RATE.search(inline.get("mimeType", ""))
                rate = int(match.group(1)) if match else 24000
                pcm = base64.b64decode(inline["data"])
                out.append(ProviderEvent("audio", audio=pcm, rate=rate))
        if text := (content.get("outputTranscription") or {}).get("text"):
            out.append(ProviderEvent("translation_text", text=text))
        return out


def build(ctx: CallContext) -> StreamingInterpretation:
    return StreamingInterpretation(ctx, GeminiLiveWire(ctx.settings))
