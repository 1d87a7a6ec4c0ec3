"""FAKE of the Gemini Live API's translation mode (the subset dragoman uses).

From Google's public docs ("Live translation with Gemini Live API", Live API WebSocket
reference): one ``setup`` with a ``translationConfig`` → ``setupComplete``; ``realtimeInput``
audio (16 kHz PCM16) → ``serverContent`` with ``inputTranscription``, ``modelTurn`` audio
(24 kHz PCM16) and ``outputTranscription``. A wrong key is refused before the upgrade (403);
a bad setup closes the socket with 1007. The translation is synthetic, as in the OpenAI fake:
speech energy becomes a delayed tone and the word "word".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from dragoman.fakes.openai_translate import BLOCK_S, DELAY_S, STALL_MAX_S, _is_speech, _tone
from dragoman.fakes.state import FakeState

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
RATE_IN, RATE_OUT = 16000, 24000
TONE_B64 = base64.b64encode(_tone(RATE_OUT, BLOCK_S, hz=392.0)).decode()


def add_routes(app: web.Application, state: FakeState) -> None:
    app.router.add_get(PATH, _handler(state))


def _key_ok(request: web.Request, state: FakeState) -> bool:
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    return not state.fault.refuse and state.gemini_key is not None and key == state.gemini_key


def _handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        fault = state.fault
        if not _key_ok(request, state):
            state.count("gemini_refused")
            body = {"error": {"code": 403, "message": fault.message("API key not valid (fake).")}}
            return web.json_response(body, status=403)
        ws = web.WebSocketResponse(autoping=fault.stall_after_s is None, max_msg_size=2**22)
        await ws.prepare(request)
        session: dict[str, Any] = {"kind": "gemini-live", "setup": None, "audio_bytes": 0}
        state.sessions.append(session)
        state.count("gemini_sessions")

        async def send(msg: dict[str, Any]) -> None:
            if not ws.closed:  # Gemini sends JSON in binary frames
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_bytes(json.dumps(msg).encode())

        queue: asyncio.Queue[float] = asyncio.Queue()
        emitter = asyncio.create_task(_emit(queue, send, session))
        buf = bytearray()
        block = int(RATE_IN * BLOCK_S) * 2
        t0 = time.monotonic()
        soft_error_sent = False
        try:
            async for msg in ws:
                elapsed = time.monotonic() - t0
                if fault.drop_after_s is not None and elapsed >= fault.drop_after_s:
                    request.transport.close()
                    break
                if fault.stall_after_s is not None and elapsed >= fault.stall_after_s:
                    await asyncio.sleep(STALL_MAX_S)
                    break
                if fault.error_after_s is not None and elapsed >= fault.error_after_s:
                    reason = fault.message("fake: internal error")
                    if fault.error_fatal:
                        # A close reason is at most 123 bytes.
                        await ws.close(code=1011, message=reason.encode()[:123])
                        break
                    if not soft_error_sent:
                        soft_error_sent = True
                        await send({"error": {"code": 429, "message": reason}})
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                event = json.loads(msg.data)
                if session["setup"] is None:
                    setup = event.get("setup")
                    if not isinstance(setup, dict) or "translationConfig" not in setup:
                        await ws.close(code=1007, message=b"first message must be a setup")
                        break
                    session["setup"] = setup
                    await send({"setupComplete": {}})
                    continue
                audio = (event.get("realtimeInput") or {}).get("audio") or {}
                if audio.get("mimeType") != f"audio/pcm;rate={RATE_IN}":
                    await ws.close(code=1007, message=b"expected audio/pcm;rate=16000")
                    break
                pcm = base64.b64decode(audio.get("data", ""))
                session["audio_bytes"] += len(pcm)
                buf += pcm
                while len(buf) >= block:
                    chunk = bytes(buf[:block])
                    del buf[:block]
                    if _is_speech(chunk):
                        await send({"serverContent": {"inputTranscription": {"text": "word "}}})
                        queue.put_nowait(time.monotonic() + DELAY_S)
        finally:
            emitter.cancel()
        return ws

    return handle


async def _emit(
    queue: asyncio.Queue[float],
    send: Callable[[dict[str, Any]], Awaitable[None]],
    session: dict[str, Any],
) -> None:
    while True:
        due = await queue.get()
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        target = session["setup"]["translationConfig"].get("targetLanguageCode", "?")
        part = {"inlineData": {"mimeType": f"audio/pcm;rate={RATE_OUT}", "data": TONE_B64}}
        await send(
            {
                "serverContent": {
                    "modelTurn": {"parts": [part]},
                    "outputTranscription": {"text": f"[{target}] word "},
                }
            }
        )
