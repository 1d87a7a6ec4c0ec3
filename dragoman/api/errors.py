"""JSON errors of the control plane: ``{"error": {"code", "message"}}`` for every failure.

The fleet's errors (``contract.errors``) become answers through the contract's one table,
here and on the worker's internal endpoint alike.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dragoman.contract.errors import FLEET_ERRORS, to_http


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


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


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
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)
