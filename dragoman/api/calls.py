"""``/v1/calls``: one HTTP round trip takes an offer and returns the agent's answer."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from dragoman import logs, tracing
from dragoman.api import admission, metrics
from dragoman.api.direct import ProviderClients, mint_session, overflow_provider
from dragoman.api.direct import choose as choose_direct
from dragoman.api.rooms import verify as verify_room
from dragoman.api.turn import ice_servers
from dragoman.contract.calls import CallRequest
from dragoman.contract.errors import (
    AgentFailed,
    CallRejected,
    NoAgentAvailable,
    RegistryUnavailable,
    UnknownCall,
)
from dragoman.fleet.autoscale import AutoscaleConfig
from dragoman.fleet.autoscale import autoscale as size_fleet
from dragoman.fleet.dispatcher import Dispatcher
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.ranking import free_local_slots, free_slots
from dragoman.fleet.registry import Registry
from dragoman.http.body import documented, json_body
from dragoman.http.errors import ApiError, answers, fleet_error
from dragoman.media.offer_sdp import SdpError, check_offer
from dragoman.pipeline.glossary import check_name as check_glossary_name
from dragoman.pipeline.providers.catalog import (
    catalogue,
    direct_overflow_enabled,
    resolve_interpretation,
    validate_call,
)

# Every fleet error (contract.errors) that escapes a route is answered through the
# contract's table (http.errors.install_error_handlers): a registry that is down answers
# 503 ``registry_unavailable`` wherever it is met.

router = APIRouter()
log = logging.getLogger("dragoman.api")


class CallOffer(BaseModel):
    sdp: str
    type: Literal["offer"]
    source: str
    target: str
    provider: str | None = None  # default: settings.provider
    glossary: str | None = None  # the NAME of a server-side glossary (openai-cascade)
    # "one_way": the caller hears its own words translated; "conversation": two people on
    # one device, each utterance into the pair's other language.
    mode: str = "one_way"
    # "simultaneous" (while the person talks) or "consecutive" (after each sentence); default:
    # the call mode's (catalog.resolve_interpretation). A room's guest follows the room's
    # rules (its provider, room mode), not its host's choice.
    interpretation: str | None = None
    # A room invitation's token (from its link): this caller is the room's second person.
    room: str | None = None


class DirectRequest(BaseModel):
    source: str
    target: str
    provider: str | None = None  # default: settings.direct_provider


def _dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


async def admitted(request: Request) -> admission.Caller:
    """Who is calling, checked in admission's order before the body is read: JSON (415),
    the address's request rate, the ticket, the subject's request rate (429, 401/403)."""
    request.state.t0 = time.perf_counter()
    request.state.t0_ns = time.time_ns()  # the call's trace starts here (tracing)
    settings = request.app.state.settings
    await admission.check_request(request)
    caller = admission.identify(request, settings)
    await admission.check_subject_rate(_dispatcher(request).registry, settings, caller)
    return caller


Admitted = Annotated[admission.Caller, Depends(admitted)]
Offer = Annotated[CallOffer, Depends(json_body(CallOffer))]
Direct = Annotated[DirectRequest, Depends(json_body(DirectRequest))]


def _fail(outcome: str, e: Exception) -> ApiError:
    metrics.CALLS.labels(outcome).inc()
    return fleet_error(e)


@router.post(
    "/v1/calls",
    status_code=201,
    response_model=None,
    responses={
        200: {"description": "The fleet is full: a direct-mode session (mode 'direct')."},
        **answers(400, 401, 403, 404, 410, 413, 415, 429, 503),
    },
    openapi_extra=documented(CallOffer),
)
async def create_call(
    request: Request, caller: Admitted, offer: Offer
) -> dict[str, Any] | JSONResponse:
    # The call's first span: placing it, admission to answer (a trace's root).
    with tracing.tracer("api").start_as_current_span(
        "POST /v1/calls", kind=trace.SpanKind.SERVER, start_time=request.state.t0_ns
    ) as span:
        return await _place_call(request, caller, offer, span)


async def _place_call(
    request: Request, caller: admission.Caller, offer: CallOffer, span: trace.Span
) -> dict[str, Any] | JSONResponse:
    t0 = request.state.t0
    settings = request.app.state.settings
    registry = _dispatcher(request).registry
    invitation = None
    if offer.room is not None:
        # The room decides the provider and what the guest's words are translated into.
        invitation = verify_room(offer.room, request.app.state.room_key)
        offer.provider, offer.target, offer.mode = invitation.provider, invitation.language, "room"
    elif offer.mode == "room":
        raise ApiError(400, "bad_mode", "A room is joined with its invitation link ('room').")
    # CallRejected (400; 503 for a provider not configured here) answers by itself.
    spec, pair = validate_call(offer.provider, offer.source, offer.target, settings, offer.mode)
    interpretation = resolve_interpretation(spec, pair.mode, offer.interpretation)
    check_glossary_name(offer.glossary)
    admission.check_provider(caller, spec.name)
    try:
        check_offer(offer.sdp)
    except SdpError as e:
        raise ApiError(400, "bad_sdp", f"Malformed SDP offer: {e}") from e

    request.app.state.arrival_meter.record()  # every valid request, retries included
    if spec.kind == "local":
        request.app.state.local_arrival_meter.record()
    call_id = invitation.guest_call_id if invitation else uuid.uuid4().hex
    logs.CALL_ID.set(call_id)  # this request's log lines are about this call
    held = await admission.hold_call(registry, settings, caller, call_id)
    # The page's key to this call's control channel.
    control_token = admission.control_token(settings, caller, call_id, secrets.token_urlsafe(24))
    t_checked = time.perf_counter()
    call = CallRequest(
        call_id=call_id,
        sdp=offer.sdp,
        sdp_type=offer.type,
        source=pair.source,
        target=pair.target,
        provider=spec.name,
        glossary=offer.glossary,
        control_token=control_token,
        max_call_s=admission.call_max_s(settings, caller),
        mode=pair.mode,
        room_host=invitation.host_call_id if invitation else None,
        interpretation=interpretation,
        holds=tuple(held),
        hold_max_age_s=admission.hold_max_age_s(settings, caller),
    )
    span.set_attributes(tracing.call_attributes(call))
    checked_ns = request.state.t0_ns + int((t_checked - t0) * 1e9)
    tracing.record(tracing.tracer("api"), "admission", request.state.t0_ns, checked_ns)
    try:
        result = await _dispatcher(request).start_call(
            call,
            # A local-pipeline call also needs a free slot on a node's inference service.
            local=spec.kind == "local",
        )
    except NoAgentAvailable as e:
        await _release_quietly(registry, held, call_id)
        # (A conversation or a room needs both directions: a direct session is one-way. Its
        # providers stream: the interpretation asked for does not apply there.)
        direct = (
            overflow_provider(settings, pair, spec.name, _allows(caller))
            if admission.may_go_direct(caller) and pair.mode == "one_way"
            else None
        )
        if direct is not None:
            # The fleet is full: the caller talks to the provider directly while nodes boot.
            await admission.check_direct(registry, settings, caller)
            max_s = admission.call_max_s(settings, caller)
            body = await mint_session(
                settings, _provider_clients(request), direct, pair, "overflow", max_s
            )
            metrics.CALLS.labels("direct_overflow").inc()
            return JSONResponse(body, status_code=200)
        raise _fail(e.code, e) from e  # no_agent, or no_local_capacity
    except CallRejected as e:
        await _release_quietly(registry, held, call_id)
        raise _fail("rejected", e) from e
    except AgentFailed as e:
        await _release_quietly(registry, held, call_id)
        raise _fail("agent_failed", e) from e
    except RegistryUnavailable as e:
        raise _fail("registry_unavailable", e) from e
    timings = dict(result.timings_ms)
    timings["validate"] = round((t_checked - t0) * 1000, 2)
    timings["total"] = round((time.perf_counter() - t0) * 1000, 2)
    metrics.CALLS.labels("answered").inc()
    metrics.ANSWER_SECONDS.observe(timings["total"] / 1000)
    return {
        "mode": "agent",
        "interpretation": interpretation,
        "call_mode": pair.mode,
        "provider": spec.name,
        "call_id": call_id,
        "sdp": result.sdp,
        "type": "answer",
        "node_id": result.node_id,
        "control_url": f"/v1/calls/{call_id}/control",
        "control_token": control_token,
        "timings_ms": timings,
    }


@router.post(
    "/v1/calls/direct",
    responses=answers(400, 401, 403, 413, 415, 429, 503),
    openapi_extra=documented(DirectRequest),
)
async def create_direct_call(request: Request, caller: Admitted, req: Direct) -> dict[str, Any]:
    """A direct-mode session on request: an ephemeral secret, never the API key."""
    settings = request.app.state.settings
    registry = _dispatcher(request).registry
    provider, pair = choose_direct(settings, req.source, req.target, req.provider, _allows(caller))
    admission.check_provider(caller, provider)
    await admission.check_direct(registry, settings, caller)
    max_s = admission.call_max_s(settings, caller)
    body = await mint_session(
        settings, _provider_clients(request), provider, pair, "requested", max_s
    )
    metrics.CALLS.labels("direct").inc()
    return body


async def _release_quietly(registry: Registry, keys: list[str], call_id: str) -> None:
    try:
        await admission.release(registry, keys, call_id)
    except RegistryUnavailable:
        pass  # the hold lapses by itself once the registry has no such call


def _provider_clients(request: Request) -> ProviderClients:
    """One set of provider SDK clients per app, for direct-mode minting (made on first use)."""
    state = request.app.state
    if getattr(state, "provider_clients", None) is None:
        state.provider_clients = ProviderClients(state.settings)
    return state.provider_clients


def _allows(caller: admission.Caller) -> Callable[[str], bool]:
    """Whether this caller's ticket lets it use a provider (for choosing a direct one)."""

    def allows(provider: str) -> bool:
        try:
            admission.check_provider(caller, provider)
        except ApiError:
            return False
        return True

    return allows


@router.delete("/v1/calls/{call_id}", status_code=204, responses=answers(401, 403, 404, 503))
async def end_call(call_id: str, request: Request) -> Response:
    admission.check_hangup(request, request.app.state.settings, call_id)
    if not await _dispatcher(request).end_call(call_id, "remote_hangup"):
        raise UnknownCall(call_id)  # 404, by the contract's table like the fleet's others
    return Response(status_code=204)


@router.get("/v1/ice-servers")
async def get_ice_servers(request: Request) -> JSONResponse:
    """TURN servers with credentials valid for ``turn_ttl_s`` (none when TURN is not set)."""
    s = request.app.state.settings
    urls = [u.strip() for u in (s.turn_urls or "").split(",") if u.strip()]
    secret = s.turn_secret.get_secret_value() if s.turn_secret else None
    label = secrets.token_hex(4)  # coturn logs it; nothing about the caller
    body = ice_servers(urls, secret, label, time.time(), s.turn_ttl_s)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/v1/languages")
async def languages(request: Request) -> dict[str, Any]:
    s = request.app.state.settings
    return catalogue(s)


async def fleet_summary(request: Request) -> dict[str, Any]:
    """Fleet view from the registry and the autoscale policy, also refreshing the gauges."""
    settings = request.app.state.settings
    try:
        nodes = await _dispatcher(request).registry.nodes()
    except RegistryUnavailable:
        metrics.REGISTRY_UP.set(0)
        raise
    metrics.REGISTRY_UP.set(1)
    live = [n for n in nodes if n.alive]
    active = sum(n.load for n in live)
    meter = request.app.state.arrival_meter
    replicas = settings.autoscale_api_replicas
    rate_history = [c * replicas for c in meter.history()]
    local_history = [c * replicas for c in request.app.state.local_arrival_meter.history()]
    local_active = sum(n.local_load for n in live)
    # A fleet whose full state overflows to direct mode keeps a lower warm floor.
    cfg = AutoscaleConfig.from_settings(settings, direct_overflow_enabled(settings))
    # The nodes say how many local calls one serves (their cores, not this api's).
    per_node = max((n.local_capacity for n in live if n.state == NodeState.READY), default=0)
    cfg = dataclasses.replace(cfg, local_slots_per_node=per_node)
    decision = size_fleet(
        live,
        rate_history,
        active,
        cfg,
        local_active=local_active,
        local_arrivals_per_s=local_history,
    )
    metrics.FLEET_FREE_SLOTS.set(free_slots(nodes))
    metrics.FLEET_FREE_LOCAL_SLOTS.set(free_local_slots(nodes))
    for state in NodeState:
        metrics.FLEET_NODES.labels(state).set(sum(1 for n in live if n.state == state))
    metrics.DESIRED_NODES.set(decision.desired_nodes)
    return {
        "nodes": len(live),
        "dead_nodes": len(nodes) - len(live),
        "fleet_active_calls": active,
        "free_slots": free_slots(nodes),
        "fleet_local_calls": local_active,
        "free_local_slots": free_local_slots(nodes),
        "desired_nodes": decision.desired_nodes,
        "autoscale": {
            "need_slots": decision.need_slots,
            "need_local_slots": decision.need_local_slots,
            "arrival_rate_per_s": decision.rate_per_s,
            "expected_arrivals": decision.expected_arrivals,
            # Kubernetes picks which pod to stop; this is the policy's preference (empty ones).
            "drain_candidates": list(decision.drain),
        },
    }


@router.get("/v1/fleet/autoscale", responses=answers(503))
async def autoscale(request: Request) -> dict[str, Any]:
    return await fleet_summary(request)


@router.get(
    "/healthz",
    responses={503: {"description": "Not ready: the registry cannot be reached ('status')."}},
)
async def healthz(request: Request) -> JSONResponse:
    local = request.app.state.local_calls
    body: dict[str, Any] = dict(local.stats()) if local is not None else {}
    if local is not None:
        gateway = local.gateway
        body["media"] = {
            **gateway.stats(),
            "janus_handles": await gateway.count_handles(),
            "janus_sessions": await gateway.count_sessions(),
        }
    try:
        body.update(await fleet_summary(request))
    except RegistryUnavailable as e:
        return JSONResponse({**body, "status": "registry_unavailable", "error": str(e)}, 503)
    body["status"] = "draining" if body.get("draining") else "ok"
    return JSONResponse(body)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus' text exposition format."}},
)
async def prometheus_metrics(request: Request) -> Response:
    # Refresh the fleet gauges, as the worker's /metrics does its own: otherwise they would
    # only move when a probe or KEDA asks. A registry that does not answer reads as
    # dragoman_api_registry_up 0 (the other gauges keep their last values).
    with contextlib.suppress(RegistryUnavailable):
        await fleet_summary(request)
    if request.app.state.local_metrics is not None:  # serve: the worker in this process
        request.app.state.local_metrics()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
