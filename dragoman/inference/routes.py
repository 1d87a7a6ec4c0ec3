"""The inference service's HTTP routes (see ``wire`` for the API): thin adapters from
requests to the ``InferenceServer``'s methods."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dragoman.contract.errors import error_body
from dragoman.inference import wire
from dragoman.inference.lanes import Superseded

if TYPE_CHECKING:
    from dragoman.inference.server import InferenceServer

log = logging.getLogger("dragoman.inference")

Endpoint = Callable[[Request], Awaitable[Response]]


class TooLarge(ValueError):
    """A body over ``wire.MAX_BODY``: the request's fault, answered 413 and not logged."""


class BadRequest(ValueError):
    """A bad query parameter: the request's fault, answered 400 and not logged."""


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


def _reporting(op: str) -> Callable[[Endpoint], Endpoint]:
    """One bad request must not take the node's models down: it is answered with its error
    (and logged, unless the body was too large)."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except TooLarge as e:
                return _error(413, "body_too_large", str(e))
            except BadRequest as e:
                return _error(400, "bad_request", str(e))
            except Superseded:
                # A newer request of the same stream replaced it: expected, not logged.
                return _error(409, wire.SUPERSEDED, "A newer request of its stream replaced it.")
            except Exception as e:
                log.exception("inference request %s failed", op)
                return _error(500, "inference_failed", str(e))

        return run

    return wrap


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > wire.MAX_BODY:
        raise TooLarge(f"body too large: {declared}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > wire.MAX_BODY:
            raise TooLarge(f"body too large: over {wire.MAX_BODY}")
    return bytes(body)


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("0", "false", "no", ""):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise BadRequest(f"{name} must be 1 or 0, not {value!r}")


def _speed(value: str | None) -> float:
    if value is None:
        return 1.0
    try:
        speed = float(value)
    except ValueError:
        speed = math.nan
    if not (wire.TTS_SPEED_MIN <= speed <= wire.TTS_SPEED_MAX):  # NaN fails this too
        raise BadRequest(
            f"speed must be a number from {wire.TTS_SPEED_MIN} to {wire.TTS_SPEED_MAX}, "
            f"not {value!r}"
        )
    return speed


def create_app(server: InferenceServer) -> Starlette:
    @_reporting("stt")
    async def stt(request: Request) -> Response:
        q = request.query_params
        task = q.get("task", "transcribe")
        if task not in ("transcribe", "translate"):
            raise BadRequest(f"task must be transcribe or translate, not {task!r}")
        priority = q.get("priority", "final")
        if priority not in wire.PRIORITIES:
            raise BadRequest(f"priority must be one of {', '.join(wire.PRIORITIES)}")
        prompt = q.get("prompt")
        answer = await server.stt(
            await _body(request),
            q.get("language"),
            task,
            prompt=prompt[-wire.PROMPT_CHARS :] if prompt else None,
            words=_flag(q.get("words"), "words"),
            priority=priority,
            stream=q.get("stream") or None,
        )
        return JSONResponse(answer)

    @_reporting("identify")
    async def identify(request: Request) -> Response:
        candidates = request.query_params.getlist("candidates")
        return JSONResponse(await server.identify(await _body(request), candidates))

    @_reporting("tts")
    async def tts(request: Request) -> Response:
        speed = _speed(request.query_params.get("speed"))
        text = (await _body(request)).decode()
        chunks = server.tts(text, speed)
        # Wait for the first audio before answering, so a synthesis that fails at once is
        # an error status with its reason rather than a stream cut short.
        first = await anext(chunks, None)

        async def stream() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield first
                    async for pcm in chunks:
                        yield pcm
            finally:
                # A caller that hangs up (its call ended) cancels the stream: nothing to log.
                await chunks.aclose()

        headers = {wire.SAMPLE_RATE_HEADER: str(server.tts_rate)}
        return StreamingResponse(stream(), media_type=wire.AUDIO, headers=headers)

    async def ping(_request: Request) -> Response:
        return JSONResponse(server.ping())

    return Starlette(
        routes=[
            Route(wire.STT, stt, methods=["POST"]),
            Route(wire.IDENTIFY, identify, methods=["POST"]),
            Route(wire.TTS, tts, methods=["POST"]),
            Route(wire.PING, ping, methods=["GET"]),
        ]
    )
