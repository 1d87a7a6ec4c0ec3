"""The worker's internal HTTP endpoint: call hand-off from api replicas (shared secret),
health for readiness probes, Prometheus metrics."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from dragoman.api.calls import read_json_limited
from dragoman.api.errors import FLEET_ERRORS, ApiError, fleet_error, install_error_handlers
from dragoman.fleet.call_request import CallRequest
from dragoman.fleet.control_link import CLOSE_UNAUTHORIZED, LinkClosed, relay
from dragoman.fleet.errors import AgentFailed
from dragoman.fleet.worker_client import CALL_TOKEN_HEADER, TOKEN_HEADER
from dragoman.worker.service import WorkerService

# The hand-off body is a CallRequest as JSON (fleet/call_request.py); pydantic checks it.
HANDOFF = TypeAdapter(CallRequest)


def create_worker_app(
    service: WorkerService,
    token: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    app = FastAPI(title="dragoman worker", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    def authorize(request: Request) -> None:
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "Missing or wrong internal token.")

    @app.post("/internal/calls", status_code=201)
    async def start_call(request: Request) -> dict[str, Any]:
        authorize(request)
        raw = await read_json_limited(request, service.settings.max_body_bytes)
        try:
            req = HANDOFF.validate_python(raw)
        except ValueError as e:
            raise ApiError(400, "bad_request", str(e)) from e
        try:
            return await service.start_call(req)
        except FLEET_ERRORS as e:
            raise fleet_error(e) from e
        except AgentFailed as e:
            raise ApiError(503, "agent_failed", str(e), {"Retry-After": "1"}) from e

    @app.post("/internal/calls/{call_id}/invite")
    async def invite(call_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        raw = await read_json_limited(request, service.settings.max_body_bytes)
        if not isinstance(raw, dict) or not isinstance(raw.get("control_token"), str):
            raise ApiError(400, "bad_request", "control_token is required.")
        try:
            return await service.invite(call_id, raw["control_token"], float(raw.get("ttl_s", 600)))
        except FLEET_ERRORS as e:
            raise fleet_error(e) from e

    @app.delete("/internal/calls/{call_id}", status_code=204)
    async def end_call(call_id: str, request: Request, reason: str = "remote_hangup") -> Response:
        authorize(request)
        if not await service.end_call(call_id, reason):
            raise ApiError(404, "unknown_call", f"No call {call_id!r} on this node.")
        return Response(status_code=204)

    @app.websocket("/internal/calls/{call_id}/control")
    async def control(ws: WebSocket, call_id: str) -> None:
        """An api replica relaying a page's control channel for a call on this node."""
        await ws.accept()
        given = ws.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            await ws.close(CLOSE_UNAUTHORIZED, "missing or wrong internal token")
            return
        try:
            link = service.node.hub.attach(call_id, ws.headers.get(CALL_TOKEN_HEADER, ""))
        except LinkClosed as e:
            await ws.close(e.code, e.reason)
            return
        await relay(ws, link)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        stats = service.pool.stats()
        state = service.state if service.ready else "STARTING"
        body = {
            "state": state,
            "node_id": service.settings.node_id,
            **stats,
            "media": {
                **service.gateway.stats(),
                "janus_handles": await service.gateway.count_handles(),
            },
        }
        return JSONResponse(body, 200 if state == "READY" else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        service.report()  # refresh the gauges
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
