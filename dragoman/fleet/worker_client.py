"""How the api hands a call to a worker: in-process (``serve``) or over authenticated HTTP,
and how it reaches a call's control channel on that worker."""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeVar

import httpx
import websockets
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection, connect

from dragoman.contract.calls import (
    CALL_TOKEN_HEADER,
    TOKEN_HEADER,
    CallAnswer,
    CallRequest,
    InviteAnswer,
    InviteRequest,
)
from dragoman.contract.errors import AgentFailed, from_http
from dragoman.contract.page import CLOSE_ENDED, CLOSE_UNAVAILABLE, MAX_MESSAGE_BYTES
from dragoman.fleet.control_link import ControlLink, LinkClosed

M = TypeVar("M", bound=BaseModel)


class WorkerClient(Protocol):
    async def start_call(self, req: CallRequest) -> CallAnswer: ...

    async def end_call(self, call_id: str, reason: str) -> bool: ...

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> InviteAnswer:
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

    async def start_call(self, req: CallRequest) -> CallAnswer:
        return await self._service.start_call(req)

    async def end_call(self, call_id: str, reason: str) -> bool:
        return await self._service.end_call(call_id, reason)

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> InviteAnswer:
        return await self._service.invite(call_id, control_token, ttl_s)

    async def open_control(self, call_id: str, token: str) -> ControlLink:
        return self._service.attach_control(call_id, token)


class HttpWorkerClient:
    """A worker on another host, reached on its internal endpoint with the shared secret."""

    def __init__(self, address: str, http: httpx.AsyncClient, token: str, timeout_s: float):
        self._base = address.rstrip("/")
        self._http = http
        self._headers = {TOKEN_HEADER: token}
        self._timeout = timeout_s

    async def start_call(self, req: CallRequest) -> CallAnswer:
        answer = await self._post("/internal/calls", req.model_dump(), req.call_id)
        return self._read(CallAnswer, answer)

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

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> InviteAnswer:
        body = InviteRequest(control_token=control_token, ttl_s=ttl_s).model_dump()
        answer = await self._post(f"/internal/calls/{call_id}/invite", body, call_id)
        return self._read(InviteAnswer, answer)

    def _read(self, model: type[M], answer: Any) -> M:
        try:
            return model.model_validate(answer)
        except ValidationError as e:
            raise AgentFailed(f"worker {self._base} answered something else: {e}") from e

    async def _post(self, path: str, body: dict[str, Any], call_id: str) -> dict[str, Any]:
        """POST to the worker; its errors (``contract.errors.to_http``) back as exceptions."""
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
        e = from_http(resp.status_code, code, message, resp.headers.get("retry-after"), call_id)
        if isinstance(e, AgentFailed):
            raise AgentFailed(f"worker {self._base} {e}")
        raise e

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
