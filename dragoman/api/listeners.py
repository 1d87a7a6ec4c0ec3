"""Public and internal traffic apart: one app, two listening sockets, each request served
only if it came in on the port its path belongs to.

The public port serves the page and the public API; the internal port (``internal_port``)
serves health, metrics and the autoscale view, which probes, Prometheus and KEDA read and a
caller never should (``/healthz`` lists agent pids). Each port's ``/openapi.json`` describes
the routes it serves. A path asked of the wrong port is 404, as if it did not exist there.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from dragoman.api.openapi import document, is_internal

OPENAPI_PATH = "/openapi.json"


class SplitListeners:
    """ASGI middleware: answers 404 for a path asked of the other listener's port."""

    def __init__(self, app: ASGIApp, internal_port: int, fastapi_app: FastAPI) -> None:
        self.app = app
        self.internal_port = internal_port
        self.fastapi_app = fastapi_app
        self._internal_doc: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        server = scope.get("server")
        on_internal = server is not None and server[1] == self.internal_port
        path = scope["path"]
        if on_internal and path == OPENAPI_PATH and scope["type"] == "http":
            if scope["method"] in ("GET", "HEAD"):
                await self._send_internal_doc(send)
            else:
                await self.app(scope, receive, send)  # 405 with Allow, as on the public port
        elif is_internal(path) == on_internal:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "not found"})
        else:
            await _send_json(send, 404, {"error": {"code": "not_found", "message": "Not Found"}})

    async def _send_internal_doc(self, send: Send) -> None:
        if self._internal_doc is None:
            self._internal_doc = json.dumps(document(self.fastapi_app, internal=True)).encode()
        await _send_bytes(send, 200, self._internal_doc)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    await _send_bytes(send, status, json.dumps(body).encode())


async def _send_bytes(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
