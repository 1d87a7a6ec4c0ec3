"""JSON errors of the control plane: ``{"error": {"code", "message"}}`` for every failure.

The fleet's errors (``contract.errors``) become answers through the contract's one table,
here and on the worker's internal endpoint alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dragoman.contract.errors import FLEET_ERRORS, error_body, to_http


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, for programs: e.g. bad_sdp, rate_limited.")
    message: str = Field(description="What to do about it, for people.")


class ErrorAnswer(BaseModel):
    """Every error answer of the API (and of the worker's internal endpoint)."""

    error: ErrorDetail


# When each error status is answered (the OpenAPI document's descriptions).
_MEANING = {
    400: "The request is malformed: bad JSON, a missing field, an unknown language, "
    "provider or interpretation, a malformed SDP offer.",
    401: "A call ticket or control token is required and missing, forged or expired "
    "(WWW-Authenticate says which).",
    403: "The ticket or token is valid but does not allow this.",
    404: "No such call, room or path.",
    410: "The room invitation has expired.",
    413: "The request body is over max_body_bytes.",
    415: "The body is not sent as 'Content-Type: application/json'.",
    429: "Over a request-rate or concurrent-call limit; Retry-After says when to retry.",
    503: "No capacity (or a provider, the registry, a node) right now; Retry-After says when "
    "to retry.",
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: its error statuses, each with the one error body."""
    return {s: {"model": ErrorAnswer, "description": _MEANING[s]} for s in statuses}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def fleet_error(e: Exception) -> ApiError:
    """A fleet error (``contract.errors.FLEET_ERRORS``) as this app's answer."""
    answer = to_http(e)
    return ApiError(answer.status, answer.code, answer.message, answer.headers)


def validation_message(e: ValidationError | RequestValidationError) -> str:
    """The first problem with a body, as ``field: what is wrong``."""
    errors = e.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    msg = first.get("msg", "invalid request")
    return f"{where}: {msg}" if where else msg


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    async def _fleet_error(_req: Request, exc: Exception) -> JSONResponse:
        return await _api_error(_req, fleet_error(exc))

    for kind in FLEET_ERRORS:
        app.add_exception_handler(kind, _fleet_error)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("bad_request", validation_message(exc)), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, detail = exc.status_code, str(exc.detail)
        headers = dict(exc.headers or {})
        if status in (404, 405):
            # The page's static files, mounted at "/", catch every path a route refuses the
            # method of: GET /v1/calls would be their 404, PUT /v1/calls their 405 with
            # "GET, HEAD". A path a route serves is 405 with that route's methods (RFC 9110).
            methods = route_methods(app.routes, request.url.path)
            if methods and request.method not in methods:
                status, detail = 405, "Method Not Allowed"
                headers["Allow"] = ", ".join(methods)
            elif status == 405:
                headers["Allow"] = "GET, HEAD"
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        return JSONResponse(error_body(code, detail), status, headers=headers)


def route_methods(routes: Iterable[Any], path: str) -> list[str]:
    """The methods the routes serve ``path`` with; none when no route has that path."""
    matches = [
        route
        for route in _flat(routes)
        if getattr(route, "methods", None) and route.path_regex.match(path)
    ]
    # A literal path (/v1/calls/direct) is that resource, not a value of a parameter
    # (/v1/calls/{call_id}).
    literal = [r for r in matches if "{" not in r.path]
    return sorted({m for r in literal or matches for m in r.methods})


def _flat(routes: Iterable[Any]) -> Iterator[Any]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included APIRouter
        yield from _flat(inner.routes) if inner is not None else (route,)
