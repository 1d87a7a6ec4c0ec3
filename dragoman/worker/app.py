"""The worker's internal HTTP endpoint: call hand-off from api replicas (shared secret),
health for readiness probes, Prometheus metrics."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dragoman.contract.calls import (
    CALL_TOKEN_HEADER,
    TOKEN_HEADER,
    CallAnswer,
    CallRequest,
    InviteAnswer,
    InviteRequest,
)
from dragoman.contract.page import CLOSE_UNAUTHORIZED
from dragoman.fleet.control_link import LinkClosed, relay
from dragoman.http.body import json_body
from dragoman.http.errors import ApiError, install_error_handlers
from dragoman.worker.service import WorkerService

HandOff = Annotated[CallRequest, Depends(json_body(CallRequest))]
Invite = Annotated[InviteRequest, Depends(json_body(InviteRequest))]


def create_worker_app(
    service: WorkerService,
    token: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    app = FastAPI(title="dragoman worker", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = service.settings  # the body limit (http.body)
    # The fleet's errors answer through the contract's table (http.errors), which
    # fleet.worker_client reads back into the same exceptions.
    install_error_handlers(app)

    def authorize(request: Request) -> None:
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "Missing or wrong internal token.")

    # Dependencies run in order: the secret is checked before the body is read.
    @app.post("/internal/calls", status_code=201, dependencies=[Depends(authorize)])
    async def start_call(req: HandOff) -> CallAnswer:
        return await service.start_call(req)

    @app.post("/internal/calls/{call_id}/invite", dependencies=[Depends(authorize)])
    async def invite(call_id: str, body: Invite) -> InviteAnswer:
        return await service.invite(call_id, body.control_token, body.ttl_s)

    @app.delete("/internal/calls/{call_id}", status_code=204, dependencies=[Depends(authorize)])
    async def end_call(call_id: str, reason: str = "remote_hangup") -> Response:
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
            link = service.attach_control(call_id, ws.headers.get(CALL_TOKEN_HEADER, ""))
        except LinkClosed as e:
            await ws.close(e.code, e.reason)
            return
        await relay(ws, link)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        stats = service.calls.stats()
        state = service.state if service.ready else "STARTING"
        body = {
            "state": state,
            "node_id": service.settings.node_id,
            **stats,
            "media": {
                **service.gateway.stats(),
                "janus_handles": await service.gateway.count_handles(),
                "janus_sessions": await service.gateway.count_sessions(),
            },
        }
        return JSONResponse(body, 200 if state == "READY" else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        service.report()  # refresh the gauges
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
