"""An OpenAI realtime WebSocket (translation or transcription sessions): opening it and reading
from it, with its failures in our terms."""

from __future__ import annotations

from typing import Any

import openai
import websockets

from dragoman.pipeline.providers.base import ProviderError
from dragoman.pipeline.providers.streaming import SessionLost


async def enter(manager: Any) -> Any:
    """The open connection of an SDK connection ``manager``; ProviderError otherwise: a key
    refused at the upgrade (401/403) is ``provider_refused``, the rest
    ``provider_unavailable``."""
    try:
        return await manager.enter()
    except websockets.InvalidStatus as e:
        status = e.response.status_code
        code = "provider_refused" if status in (401, 403) else "provider_unavailable"
        raise ProviderError(code, f"HTTP {status} at the WebSocket upgrade") from e
    except openai.OpenAIError as e:
        raise ProviderError("provider_unavailable", f"{type(e).__name__}: {e}") from e


async def recv(connection: Any) -> Any:
    """The connection's next server event; SessionLost when it fails (the stream reopens)."""
    try:
        return await connection.recv()
    except openai.OpenAIError as e:
        raise SessionLost(f"{type(e).__name__}: {e}") from e
