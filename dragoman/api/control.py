"""``/v1/calls/{id}/control``: the page's control channel for its call (captions, state,
language switches, hang-up), relayed to the call's node. Authorised by the per-call token
returned with the answer (``?token=``), never by the call id alone; with call tickets on,
that token is signed and checked here before any node is asked. Its close codes are the
protocol's (``contract.page.CLOSE_*``); when the node cannot be reached and is found dead,
the page gets ``state: ended, reason: agent_lost`` and 1000 (``control_link.close_page``)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from dragoman.api.admission import check_control
from dragoman.contract.page import CLOSE_UNAUTHORIZED, CLOSE_UNAVAILABLE
from dragoman.fleet.control_link import LinkClosed, close_page, relay
from dragoman.fleet.registry import RegistryUnavailable

router = APIRouter()


@router.websocket("/v1/calls/{call_id}/control")
async def control(ws: WebSocket, call_id: str) -> None:
    await ws.accept()
    token = ws.query_params.get("token", "")
    if not token:
        await ws.close(CLOSE_UNAUTHORIZED, "missing call token")
        return
    problem = check_control(ws.app.state.settings, call_id, token)
    if problem is not None:  # a forged or foreign token never reaches a node
        await ws.close(CLOSE_UNAUTHORIZED, problem.message[:120])
        return
    dispatcher = ws.app.state.dispatcher
    wait_s = dispatcher.registry.node_ttl_s + 1.0

    async def node_lost() -> bool:
        return await dispatcher.node_lost(call_id, wait_s)

    try:
        link = await dispatcher.open_control(call_id, token)
    except RegistryUnavailable:
        await ws.close(CLOSE_UNAVAILABLE, "the call registry is unavailable")
        return
    except LinkClosed as e:
        await close_page(ws, e, node_lost)
        return
    await relay(ws, link, node_lost, ws.app.state.settings.control_messages_per_minute)
