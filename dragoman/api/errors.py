"""JSON errors of the control plane: ``{"error": {"code", "message"}}`` for every failure."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dragoman.fleet.errors import CallRejected, NoAgentAvailable, UnknownCall, WrongCallToken


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Why the fleet could not do what was asked, as HTTP: one mapping for the worker's internal
# endpoint and the api (``fleet.worker_client`` reads it back into the same exceptions).
FLEET_ERRORS = (UnknownCall, WrongCallToken, CallRejected, NoAgentAvailable)


def fleet_error(e: Exception) -> ApiError:
    if isinstance(e, UnknownCall):
        return ApiError(404, "unknown_call", f"No active call {e}.")
    if isinstance(e, WrongCallToken):
        return ApiError(403, "wrong_call_token", "That is not this call's token.")
    if isinstance(e, CallRejected):
        return ApiError(400, e.code, e.message)
    if isinstance(e, NoAgentAvailable):
        return ApiError(503, "no_agent", str(e), {"Retry-After": str(e.retry_after_s)})
    raise TypeError(f"not a fleet error: {e!r}")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return JSONResponse(error_body("bad_request", msg), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code)
