"""FAKE of the OpenAI REST endpoints the ``openai-cascade`` provider uses.

From OpenAI's API reference: ``POST /v1/audio/transcriptions`` (multipart: file, model,
language → ``{"text"}``), ``POST /v1/chat/completions`` (→ ``choices[0].message.content``)
and ``POST /v1/audio/speech`` (``response_format: "pcm"`` → raw 24 kHz PCM16, streamed).
Synthetic answers: the transcript is "fake transcript N" (the fake recognises nothing), the
"translation" is ``[<target>] <text>`` of the last user message (earlier user/assistant
messages are the context a simultaneous call sends) with the target read back from the
system prompt's language name, and speech is a tone whose length follows the text and the
``speed`` asked for (0.25–4, as the API allows). Each chat and speech request notes whether
a realtime transcription session was hearing words at that moment: ``words_heard``, the
words of the items not yet committed (0: nobody is talking).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dragoman.fakes.audio import tone
from dragoman.fakes.openai_rest import error, guard
from dragoman.fakes.state import FakeState
from dragoman.languages import LANGUAGE_NAMES

SECONDS_PER_CHAR = 0.03


def add_routes(app: web.Application, state: FakeState) -> None:
    app.router.add_post("/v1/audio/transcriptions", guard(state, _transcribe))
    app.router.add_post("/v1/chat/completions", guard(state, _chat))
    app.router.add_post("/v1/audio/speech", guard(state, _speech))


async def _transcribe(request: web.Request, state: FakeState) -> web.Response:
    form = await request.post()
    audio = form.get("file")
    size = len(audio.file.read()) if hasattr(audio, "file") else 0
    state.count("transcriptions")
    n = state.counters["transcriptions"]
    state.sessions.append(
        {
            "kind": "transcription",
            "model": form.get("model"),
            "language": form.get("language"),
            "audio_bytes": size,
        }
    )
    return web.json_response({"text": f"fake transcript {n}"})


def _target_of(system: str) -> str:
    for code, name in LANGUAGE_NAMES.items():
        if f"into {name}" in system:
            return code
    return "?"


async def _chat(request: web.Request, state: FakeState) -> web.Response:
    body = await request.json()
    msgs = body.get("messages") or []
    system = next((m["content"] for m in msgs if m.get("role") == "system"), "")
    user = next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")
    state.sessions.append(
        {
            "kind": "chat",
            "model": body.get("model"),
            "system": system,
            "messages": [{"role": m.get("role"), "content": m.get("content")} for m in msgs],
            "words_heard": sum(state.transcribing.values()),  # 0: nobody talking
        }
    )
    content = f"[{_target_of(system)}] {user}"
    return web.json_response(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


async def _speech(request: web.Request, state: FakeState) -> web.StreamResponse:
    body: dict[str, Any] = await request.json()
    state.sessions.append(
        {
            "kind": "speech",
            "model": body.get("model"),
            "voice": body.get("voice"),
            "input": body.get("input"),
            "response_format": body.get("response_format"),
            "speed": body.get("speed"),
            "words_heard": sum(state.transcribing.values()),  # 0: nobody talking
        }
    )
    if body.get("response_format") != "pcm":
        return error(400, "the fake only speaks pcm", "unsupported_format")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return error(400, "speed must be a number from 0.25 to 4.0", "invalid_value")
    seconds = SECONDS_PER_CHAR * len(body.get("input") or "") / speed
    pcm = tone(24000, max(0.2, seconds), hz=294.0)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    for i in range(0, len(pcm), 4800):  # streamed in 100 ms pieces, as the real one streams
        await resp.write(pcm[i : i + 4800])
    await resp.write_eof()
    return resp
