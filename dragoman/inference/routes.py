"""The inference service's HTTP routes (see ``wire`` for the API): thin adapters from
requests to the ``InferenceServer``'s methods."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dragoman.inference import wire

if TYPE_CHECKING:
    from dragoman.inference.server import InferenceServer

log = logging.getLogger("dragoman.inference")

Endpoint = Callable[[Request], Awaitable[Response]]


class TooLarge(ValueError):
    """A body over ``wire.MAX_BODY``: the request's fault, answered 413 and not logged."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _reporting(op: str) -> Callable[[Endpoint], Endpoint]:
    """One bad request must not take the node's models down: it is answered with its error
    (and logged, unless the body was too large)."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except TooLarge as e:
                return _error(413, str(e))
            except Exception as e:
                log.exception("inference request %s failed", op)
                return _error(500, str(e))

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


def create_app(server: InferenceServer) -> Starlette:
    @_reporting("stt")
    async def stt(request: Request) -> Response:
        q = request.query_params
        task = q.get("task", "transcribe")
        return JSONResponse(await server.stt(await _body(request), q.get("language"), task))

    @_reporting("identify")
    async def identify(request: Request) -> Response:
        candidates = request.query_params.getlist("candidates")
        return JSONResponse(await server.identify(await _body(request), candidates))

    @_reporting("tts")
    async def tts(request: Request) -> Response:
        chunks = server.tts((await _body(request)).decode())
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
