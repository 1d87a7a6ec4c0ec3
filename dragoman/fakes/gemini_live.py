"""FAKE of the Gemini Live API's translation mode (the subset dragoman uses).

From Google's public docs ("Live translation with Gemini Live API", the Live API WebSocket
reference, "Ephemeral tokens"), checked against the ``google-genai`` SDK's models
(``dragoman.fakes.sdk``): every client message is parsed as a ``LiveClientMessage`` (the
SDK's models forbid unknown fields) and every server message is built from
``LiveServerMessage`` and its parts.

- ``/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent``:
  the key in ``x-goog-api-key`` (or ``?key=``). One ``setup`` with a translation config →
  ``setupComplete``; ``realtimeInput`` audio (16 kHz PCM16) → ``serverContent`` with
  ``inputTranscription``, ``modelTurn`` audio (24 kHz PCM16) and ``outputTranscription``.
- ``…BidiGenerateContentConstrained`` (v1alpha): an ephemeral token in ``?access_token=``
  (browsers) or ``Authorization: Token …``; the token's locked setup fields win over the
  client's.
- ``POST /{version}/auth_tokens`` (v1alpha): mints an ephemeral token
  (``bidiGenerateContentSetup`` + ``fieldMask`` lock the session) → ``AuthToken``.

A wrong key is refused before the upgrade (403); a message the SDK's models do not accept
closes the socket with 1007. The real service is only reached over TLS, so the fake serves
these routes on its TLS port too (``dragoman.fakes.server``). The translation is synthetic,
as in the OpenAI fake: speech energy becomes a delayed tone and the word "word".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from google.genai import types
from pydantic import BaseModel

from dragoman.fakes import sdk
from dragoman.fakes.audio import is_speech, tone
from dragoman.fakes.openai_translate import BLOCK_S, DELAY_S, STALL_MAX_S
from dragoman.fakes.state import FakeState

WS_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.{method}"
RATE_IN, RATE_OUT = 16000, 24000
MIME_IN = f"audio/pcm;rate={RATE_IN}"
TONE = tone(RATE_OUT, BLOCK_S, hz=392.0)
TOKEN_FIELDS = {
    "uses",
    "expireTime",
    "newSessionExpireTime",
    "bidiGenerateContentSetup",
    "fieldMask",
}


def add_routes(app: web.Application, state: FakeState) -> None:
    app.router.add_get(WS_PATH, _handler(state))
    app.router.add_post("/{version}/auth_tokens", _tokens_handler(state))


def _json_error(status: int, message: str, reason: str) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": reason}}
    return web.json_response(body, status=status)


def _key_ok(request: web.Request, state: FakeState) -> bool:
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    return not state.fault.refuse and state.gemini_key is not None and key == state.gemini_key


def _token_of(request: web.Request, state: FakeState) -> dict[str, Any] | None:
    """The live ephemeral token this connection presents (one use each), or None."""
    name = request.query.get("access_token") or request.headers.get(
        "Authorization", ""
    ).removeprefix("Token ")
    token = state.gemini_tokens.get(name)
    if state.fault.refuse or token is None:
        return None
    if token["uses"] <= 0 or token["new_session_expires"] < time.time():
        return None
    token["uses"] -= 1
    return token


def _parse_time(value: Any) -> float:
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


# --- ephemeral tokens ------------------------------------------------------------------------
def _tokens_handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        fault = state.fault
        if not _key_ok(request, state):
            return _json_error(403, fault.message("API key not valid (fake)."), "PERMISSION_DENIED")
        if fault.error_after_s is not None:
            return _json_error(500, fault.message("fake: internal error"), "INTERNAL")
        if request.match_info["version"] != "v1alpha":
            return _json_error(404, "auth_tokens exists in v1alpha only", "NOT_FOUND")
        body = await request.json()
        try:
            unknown = set(body) - TOKEN_FIELDS
            if unknown:
                raise sdk.Invalid(f"unknown field(s) {sorted(unknown)}")
            setup = sdk.gemini_setup(body.get("bidiGenerateContentSetup") or {})
            uses = int(body.get("uses", 1))
            expires = _parse_time(body["expireTime"]) if "expireTime" in body else time.time()
            new_session = (
                _parse_time(body["newSessionExpireTime"])
                if "newSessionExpireTime" in body
                else time.time() + 60
            )
        except (sdk.Invalid, ValueError, TypeError, KeyError) as e:
            state.count("invalid_client_events")
            return _json_error(400, f"invalid token request: {e}", "INVALID_ARGUMENT")
        name = "auth_tokens/fake-" + secrets.token_hex(12)
        locked = setup.model_dump(mode="json", by_alias=True, exclude_none=True)
        mask = body.get("fieldMask")
        state.gemini_tokens[name] = {
            "setup": locked,
            # No mask: the whole setup is locked; a mask names the locked fields.
            "mask": [f for f in mask.split(",") if f] if mask else None,
            "uses": uses,
            "expires": expires,
            "new_session_expires": new_session,
        }
        state.sessions.append({"kind": "gemini-token", "request": body})
        state.count("gemini_tokens")
        token = types.AuthToken(name=name, expire_time=_iso(expires), uses=uses)
        return web.Response(text=sdk.gemini_wire(token), content_type="application/json")

    return handle


def _apply_locks(client: dict[str, Any], token: dict[str, Any]) -> dict[str, Any]:
    """The session a constrained connection gets: the token's locked fields win."""
    locked, mask = token["setup"], token["mask"]
    if mask is None:
        return {**locked}
    effective = {**client}
    for path in mask:
        head, _, rest = path.partition(".")
        if head not in locked:
            continue
        if rest and isinstance(locked[head], dict):
            effective[head] = {**(effective.get(head) or {})}
            if rest in locked[head]:
                effective[head][rest] = locked[head][rest]
        else:
            effective[head] = locked[head]
    return effective


# --- the Live WebSocket ----------------------------------------------------------------------
def _handler(state: FakeState) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        fault = state.fault
        method = request.match_info["method"]
        token: dict[str, Any] | None = None
        if method == "BidiGenerateContentConstrained":
            token = _token_of(request, state)
            if token is None:
                state.count("gemini_refused")
                msg = fault.message("Ephemeral token not valid (fake).")
                return _json_error(401, msg, "UNAUTHENTICATED")
        elif method != "BidiGenerateContent":
            return _json_error(404, f"no method {method}", "NOT_FOUND")
        elif not _key_ok(request, state):
            state.count("gemini_refused")
            return _json_error(403, fault.message("API key not valid (fake)."), "PERMISSION_DENIED")
        ws = web.WebSocketResponse(autoping=fault.stall_after_s is None, max_msg_size=2**22)
        await ws.prepare(request)
        session: dict[str, Any] = {
            "kind": "gemini-live",
            "setup": None,
            "client_setup": None,
            "constrained": token is not None,
            "version": request.match_info["version"],
            "audio_bytes": 0,
            "invalid": [],
        }
        state.sessions.append(session)
        state.count("gemini_sessions")

        async def send(msg: BaseModel) -> None:
            if not ws.closed:  # Gemini sends JSON in binary frames
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_bytes(sdk.gemini_wire(msg).encode())

        async def refuse(why: str) -> None:
            session["invalid"].append(why)
            state.count("invalid_client_events")
            await ws.close(code=1007, message=why.encode()[:123])

        queue: asyncio.Queue[float] = asyncio.Queue()
        emitter = asyncio.create_task(_emit(queue, send, session))
        buf = bytearray()
        block = int(RATE_IN * BLOCK_S) * 2
        t0 = time.monotonic()
        soft_error_sent = False
        try:
            async for raw in ws:
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
                    if not soft_error_sent:  # the Live API has no error message: a goAway
                        soft_error_sent = True
                        await send(
                            types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left="10s"))
                        )
                if raw.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    msg = sdk.gemini_client_message(raw.data)
                except sdk.Invalid as e:
                    await refuse(f"invalid message: {e}")
                    break
                if session["setup"] is None:
                    if msg.setup is None:
                        await refuse("the first message must be a setup")
                        break
                    given = msg.setup.model_dump(mode="json", by_alias=True, exclude_none=True)
                    effective = _apply_locks(given, token) if token else given
                    translation = (effective.get("generationConfig") or {}).get("translationConfig")
                    if not translation or not translation.get("targetLanguageCode"):
                        await refuse(
                            "a translation session needs generationConfig.translationConfig"
                        )
                        break
                    session["client_setup"], session["setup"] = given, effective
                    await send(
                        types.LiveServerMessage(
                            setup_complete=types.LiveServerSetupComplete(
                                session_id="fake-" + secrets.token_hex(6)
                            )
                        )
                    )
                    continue
                audio = msg.realtime_input.audio if msg.realtime_input else None
                if audio is None:
                    continue  # other client messages: nothing to translate
                if audio.mime_type != MIME_IN:
                    await refuse(f"expected {MIME_IN}")
                    break
                pcm = audio.data or b""
                session["audio_bytes"] += len(pcm)
                buf += pcm
                while len(buf) >= block:
                    chunk = bytes(buf[:block])
                    del buf[:block]
                    if is_speech(chunk):
                        await send(
                            types.LiveServerMessage(
                                server_content=types.LiveServerContent(
                                    input_transcription=types.Transcription(text="word ")
                                )
                            )
                        )
                        queue.put_nowait(time.monotonic() + DELAY_S)
        finally:
            emitter.cancel()
        return ws

    return handle


async def _emit(
    queue: asyncio.Queue[float],
    send: Callable[[BaseModel], Awaitable[None]],
    session: dict[str, Any],
) -> None:
    while True:
        due = await queue.get()
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        config = session["setup"]["generationConfig"]["translationConfig"]
        target = config.get("targetLanguageCode", "?")
        part = types.Part(inline_data=types.Blob(mime_type=f"audio/pcm;rate={RATE_OUT}", data=TONE))
        await send(
            types.LiveServerMessage(
                server_content=types.LiveServerContent(
                    model_turn=types.Content(role="model", parts=[part]),
                    output_transcription=types.Transcription(text=f"[{target}] word "),
                )
            )
        )
