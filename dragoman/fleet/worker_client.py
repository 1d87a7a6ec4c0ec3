"""How the api hands a call to a worker: in-process (``serve``) or over authenticated HTTP."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from dragoman.fleet.call_request import CallRequest
from dragoman.fleet.errors import AgentFailed, CallRejected, NoAgentAvailable

TOKEN_HEADER = "X-Dragoman-Token"


class WorkerClient(Protocol):
    async def start_call(self, req: CallRequest) -> dict[str, Any]: ...

    async def end_call(self, call_id: str, reason: str) -> bool: ...


class LocalWorkerClient:
    """The worker lives in this process (``dragoman serve``)."""

    def __init__(self, service: Any) -> None:
        self._service = service

    async def start_call(self, req: CallRequest) -> dict[str, Any]:
        return await self._service.start_call(req)

    async def end_call(self, call_id: str, reason: str) -> bool:
        return await self._service.end_call(call_id, reason)


class HttpWorkerClient:
    """A worker on another host, reached on its internal endpoint with the shared secret."""

    def __init__(self, address: str, http: httpx.AsyncClient, token: str, timeout_s: float):
        self._base = address.rstrip("/")
        self._http = http
        self._headers = {TOKEN_HEADER: token}
        self._timeout = timeout_s

    async def start_call(self, req: CallRequest) -> dict[str, Any]:
        body = req.to_json()
        try:
            resp = await self._http.post(
                f"{self._base}/internal/calls",
                json=body,
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as e:
            raise AgentFailed(f"worker {self._base} unreachable: {e!r}") from e
        if resp.status_code == 201:
            return resp.json()
        err = _error_of(resp)
        if resp.status_code == 400:
            raise CallRejected(err.get("code", "bad_request"), err.get("message", resp.text))
        if resp.status_code == 503:
            retry = int(resp.headers.get("retry-after", "1"))
            if err.get("code") == "agent_failed":
                raise AgentFailed(err.get("message", "agent failed"))
            raise NoAgentAvailable(err.get("message", "worker full"), retry)
        raise AgentFailed(f"worker {self._base} answered {resp.status_code}: {resp.text[:200]}")

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


def _error_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        return resp.json().get("error", {})
    except ValueError:
        return {}
