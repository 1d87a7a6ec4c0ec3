"""Speech translators: an utterance's audio in, its source text and its translation (text)
out. (The cascade's ``TextTranslator`` translates text into text.)

The local one asks the node's inference service: Whisper ``transcribe`` for the source
caption, Whisper ``translate`` (any language → English) for the translation, and Whisper's
language head to tell which of a conversation's two languages was spoken.
"""

from __future__ import annotations

from typing import Protocol

from dragoman.inference.client import InferenceClient
from dragoman.languages import LanguagePair, target_unavailable_reason


class SpeechTranslator(Protocol):
    async def identify(self, pcm16_16k: bytes, candidates: list[str]) -> str: ...

    async def transcribe(self, pcm16_16k: bytes, language: str) -> str: ...

    def speaks(self, language: str) -> bool:
        """Whether ``translate`` can produce (and the pipeline speak) this language."""
        ...

    async def translate(self, pcm16_16k: bytes, pair: LanguagePair) -> str: ...


class WhisperSpeechTranslator:
    def __init__(self, client: InferenceClient) -> None:
        self._client = client

    async def identify(self, pcm16_16k: bytes, candidates: list[str]) -> str:
        return await self._client.identify(pcm16_16k, candidates)

    async def transcribe(self, pcm16_16k: bytes, language: str) -> str:
        return (await self._client.stt(pcm16_16k, language, "transcribe")).text

    def speaks(self, language: str) -> bool:
        return target_unavailable_reason(language) is None

    async def translate(self, pcm16_16k: bytes, pair: LanguagePair) -> str:
        reason = target_unavailable_reason(pair.target)
        if reason:  # validated earlier; never fall back to echoing the source text
            raise ValueError(reason)
        return (await self._client.stt(pcm16_16k, pair.source, "translate")).text
