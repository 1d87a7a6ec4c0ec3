"""How the api hands a call to a worker: in-process (``serve``) or over authenticated HTTP,
and how it reaches a call's control channel on that worker."""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from dragoman.fleet.call_request import CallRequest
from dragoman.fleet.control_link import (
    CLOSE_ENDED,
    CLOSE_UNAVAILABLE,
    MAX_MESSAGE_BYTES,
    ControlLink,
    LinkClosed,
)
from dragoman.fleet.errors import (
    AgentFailed,
    CallRejected,
    NoAgentAvailable,
    UnknownCall,
    WrongCallToken,
)

TOKEN_HEADER = "X-Dragoman-Token"
CALL_TOKEN_HEADER = "X-Dragoman-Call-Token"


class WorkerClient(Protocol):
    async def start_call(self, req: CallRequest) -> dict[str, Any]: ...

    async def end_call(self, call_id: str, reason: str) -> bool: ...

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> dict[str, Any]:
        """Reserve a room's second slot next to the call (UnknownCall, WrongCallToken,
        CallRejected, NoAgentAvailable, AgentFailed)."""
        ...

    async def open_control(self, call_id: str, token: str) -> ControlLink:
        """Attach to a call's control channel; LinkClosed (4401/4404/4503) if refused."""
        ...


class LocalWorkerClient:
    """The worker lives in this process (``dragoman serve``)."""

    def __init__(self, service: Any) -> None:
        self._service = service

    async def start_call(self, req: CallRequest) -> dict[str, Any]:
        return await self._service.start_call(req)

    async def end_call(self, call_id: str, reason: str) -> bool:
        return await self._service.end_call(call_id, reason)

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> dict[str, Any]:
        return await self._service.invite(call_id, control_token, ttl_s)

    async def open_control(self, call_id: str, token: str) -> ControlLink:
        return self._service.node.hub.attach(call_id, token)


class HttpWorkerClient:
    """A worker on another host, reached on its internal endpoint with the shared secret."""

    def __init__(self, address: str, http: httpx.AsyncClient, token: str, timeout_s: float):
        self._base = address.rstrip("/")
        self._http = http
        self._headers = {TOKEN_HEADER: token}
        self._timeout = timeout_s

    async def start_call(self, req: CallRequest) -> dict[str, Any]:
        return await self._post("/internal/calls", req.to_json(), req.call_id)

    async def end_call(self, call_id: str, reason: str) -> bool:
        try:
            resp = await self._http.request(
                "DELETE",
                f"{self._base}/internal/calls/{call_id}",
                headers=self._headers,
                params={"reason": reason},
                timeout=self._timeout,
            )
        except httpx.HTTPError as e:
            raise AgentFailed(f"worker {self._base} unreachable: {e!r}") from e
        return resp.status_code == 204

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> dict[str, Any]:
        body = {"control_token": control_token, "ttl_s": ttl_s}
        return await self._post(f"/internal/calls/{call_id}/invite", body, call_id)

    async def _post(self, path: str, body: dict[str, Any], call_id: str) -> dict[str, Any]:
        """POST to the worker; its errors (``api.errors.fleet_error``) back as exceptions."""
        try:
            resp = await self._http.post(
                f"{self._base}{path}", json=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.HTTPError as e:
            raise AgentFailed(f"worker {self._base} unreachable: {e!r}") from e
        if resp.status_code in (200, 201):
            return resp.json()
        err = _error_of(resp)
        code, message = err.get("code", ""), err.get("message", resp.text[:200])
        if resp.status_code == 404 and code == "unknown_call":
            raise UnknownCall(call_id)
        if resp.status_code == 403 and code == "wrong_call_token":
            raise WrongCallToken(call_id)
        if resp.status_code == 400:
            raise CallRejected(code or "bad_request", message)
        if resp.status_code == 503 and code != "agent_failed":
            raise NoAgentAvailable(message, int(resp.headers.get("retry-after", "1")))
        raise AgentFailed(f"worker {self._base} answered {resp.status_code}: {message}")

    async def open_control(self, call_id: str, token: str) -> ControlLink:
        url = "ws" + self._base.removeprefix("http") + f"/internal/calls/{call_id}/control"
        headers = {**self._headers, CALL_TOKEN_HEADER: token}
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self._timeout,
                max_size=2**20,
                compression=None,
            )
        except (OSError, TimeoutError, websockets.WebSocketException) as e:
            raise LinkClosed(CLOSE_UNAVAILABLE, "the call's node is unreachable") from e
        return RemoteControlLink(ws)


class RemoteControlLink:
    """A call's control channel on another host, through the worker's internal endpoint."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    def _closed(self) -> LinkClosed:
        rcvd = self._ws.protocol.close_rcvd
        if rcvd is None:  # no close frame from the worker: it (or the network) died
            return LinkClosed(CLOSE_UNAVAILABLE, "the call's node went away")
        return LinkClosed(rcvd.code or CLOSE_ENDED, rcvd.reason)

    async def recv(self) -> dict[str, Any]:
        try:
            return json.loads(await self._ws.recv())
        except websockets.ConnectionClosed as e:
            raise self._closed() from e

    async def send(self, msg: dict[str, Any]) -> None:
        text = json.dumps(msg)
        if len(text) > MAX_MESSAGE_BYTES:
            return
        try:
            await self._ws.send(text)
        except websockets.ConnectionClosed as e:
            raise self._closed() from e

    async def close(self) -> None:
        await self._ws.close()


def _error_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        return resp.json().get("error", {})
    except ValueError:
        return {}
