"""What simultaneous mode asks of Whisper, as a small protocol (the service's tests give it a
stand-in), and its implementation over the node's inference service."""

from __future__ import annotations

from typing import Protocol

from dragoman.inference.client import InferenceClient, Superseded
from dragoman.pipeline.providers.local.simultaneous.agreement import TimedWord


class StreamDecoder(Protocol):
    async def transcribe(
        self, pcm16_16k: bytes, language: str, prompt: str, final: bool
    ) -> tuple[TimedWord, ...] | None:
        """The source words of this audio with their times (seconds from its start); None
        when the service dropped the request for a newer one of the same call."""
        ...

    async def translate(self, pcm16_16k: bytes, language: str, prompt: str) -> str:
        """This audio (one committed sentence or clause) in English."""
        ...


class WhisperStreamDecoder:
    """The node's Whisper. The re-decodes of the growing buffer are the service's lowest
    priority, and a newer one of this call replaces a queued older one; the last decode
    of an utterance and each committed sentence's translation are ``final`` priority."""

    def __init__(self, client: InferenceClient, stream_id: str) -> None:
        self._client = client
        self._stream = stream_id

    async def transcribe(
        self, pcm16_16k: bytes, language: str, prompt: str, final: bool
    ) -> tuple[TimedWord, ...] | None:
        try:
            result = await self._client.stt(
                pcm16_16k,
                language,
                "transcribe",
                prompt=prompt or None,
                words=True,
                priority="final" if final else "partial",
                stream=f"{self._stream}/source",
            )
        except Superseded:
            return None
        return tuple(TimedWord(w.start, w.end, w.text) for w in result.words)

    async def translate(self, pcm16_16k: bytes, language: str, prompt: str) -> str:
        result = await self._client.stt(pcm16_16k, language, "translate", prompt=prompt or None)
        return result.text
