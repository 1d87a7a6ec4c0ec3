"""What the OpenAI fakes' REST routes share: the error body and the key / fault check every
route makes before it does anything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from dragoman.fakes.state import FakeState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status)


def guard(
    state: FakeState, handler: Callable[[web.Request, FakeState], Awaitable[web.StreamResponse]]
) -> Handler:
    """Refuse a request without the API key (401) or while the fault says to fail (500)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        fault = state.fault
        if not state.bearer_ok(request.headers.get("Authorization"), allow_secret=False):
            return error(
                401, fault.message("Incorrect API key provided (fake)."), "invalid_api_key"
            )
        if fault.error_after_s is not None:
            return error(500, fault.message("fake: the server had an error"), "server_error")
        return await handler(request, state)

    return handle
