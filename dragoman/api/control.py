"""``/v1/calls/{id}/control``: the page's control channel for its call (captions, state,
language switches, hang-up), relayed to the call's node. Authorised by the per-call token
returned with the answer (``?token=``), never by the call id alone. Close codes: 1000 the
call ended, 4401 wrong token, 4404 unknown call, 4409 replaced by a newer connection,
4503 the node or the registry cannot be reached (the page reconnects)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from dragoman.fleet.control_link import CLOSE_UNAUTHORIZED, CLOSE_UNAVAILABLE, LinkClosed, relay
from dragoman.fleet.registry import RegistryUnavailable

router = APIRouter()


@router.websocket("/v1/calls/{call_id}/control")
async def control(ws: WebSocket, call_id: str) -> None:
    await ws.accept()
    token = ws.query_params.get("token", "")
    if not token:
        await ws.close(CLOSE_UNAUTHORIZED, "missing call token")
        return
    try:
        link = await ws.app.state.dispatcher.open_control(call_id, token)
    except LinkClosed as e:
        await ws.close(e.code, e.reason)
        return
    except RegistryUnavailable:
        await ws.close(CLOSE_UNAVAILABLE, "the call registry is unavailable")
        return
    await relay(ws, link)
