"""Client of the node-local inference service, used inside agent processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from dragoman.inference.protocol import read_message, write_message


class InferenceError(RuntimeError):
    pass


@dataclass(frozen=True)
class SttResult:
    text: str
    language: str
    duration_s: float
    compute_ms: float


class InferenceClient:
    def __init__(self, socket_path: Path | str, timeout_s: float = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout_s = timeout_s

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path), self.timeout_s
            )
        except (OSError, TimeoutError) as e:
            raise InferenceError(f"inference service unreachable: {e}") from e

    async def stt(self, pcm16_16k: bytes, language: str | None, task: str) -> SttResult:
        reader, writer = await self._open()
        try:
            await write_message(
                writer, {"op": "stt", "language": language, "task": task}, pcm16_16k
            )
            header, _ = await asyncio.wait_for(read_message(reader), self.timeout_s)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise InferenceError(f"speech-to-text failed: {e}") from e
        finally:
            writer.close()
        if not header.get("ok"):
            raise InferenceError(header.get("error", "speech-to-text failed"))
        return SttResult(
            header["text"], header["language"], header["duration_s"], header["compute_ms"]
        )

    async def identify(self, pcm16_16k: bytes, candidates: list[str]) -> str:
        """Which of ``candidates`` is spoken in this utterance."""
        reader, writer = await self._open()
        try:
            await write_message(writer, {"op": "identify", "candidates": candidates}, pcm16_16k)
            header, _ = await asyncio.wait_for(read_message(reader), self.timeout_s)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise InferenceError(f"language identification failed: {e}") from e
        finally:
            writer.close()
        if not header.get("ok"):
            raise InferenceError(header.get("error", "language identification failed"))
        return str(header["language"])

    async def tts(self, text: str) -> AsyncIterator[tuple[bytes, int]]:
        """Yield (PCM16 mono, sample_rate) chunks as the service synthesises them."""
        reader, writer = await self._open()
        try:
            await write_message(writer, {"op": "tts", "text": text})
            while True:
                try:
                    header, payload = await asyncio.wait_for(read_message(reader), self.timeout_s)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                    raise InferenceError(f"text-to-speech failed: {e}") from e
                if not header.get("ok"):
                    raise InferenceError(header.get("error", "text-to-speech failed"))
                if header.get("done"):
                    return
                yield payload, int(header["sample_rate"])
        finally:
            writer.close()

    async def ping(self) -> dict:
        """The service's health probe; InferenceError if it is down or does not answer."""
        reader, writer = await self._open()
        try:
            await write_message(writer, {"op": "ping"})
            header, _ = await asyncio.wait_for(read_message(reader), self.timeout_s)
            return header
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise InferenceError(f"ping failed: {e!r}") from e
        finally:
            writer.close()
