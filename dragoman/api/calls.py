"""``/v1/calls``: one HTTP round trip takes an offer and returns the agent's answer."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError

from dragoman.api.errors import ApiError
from dragoman.api.sdp import SdpError, check_offer
from dragoman.languages import LanguageError, catalogue, validate_pair
from dragoman.worker.pool import AgentFailed, AgentPool, CallRejected, NoAgentAvailable

router = APIRouter()


class CallOffer(BaseModel):
    sdp: str
    type: Literal["offer"]
    source: str
    target: str


async def read_json_limited(request: Request, limit: int) -> Any:
    """Read a JSON body, refusing (413) anything over ``limit`` bytes before it is buffered."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"Request body over {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"Request body over {limit} bytes.")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad_json", f"Body is not valid JSON: {e}") from e


def _pool(request: Request) -> AgentPool:
    return request.app.state.pool


@router.post("/v1/calls", status_code=201)
async def create_call(request: Request) -> dict[str, Any]:
    t0 = time.perf_counter()
    settings = request.app.state.settings
    raw = await read_json_limited(request, settings.max_body_bytes)
    try:
        offer = CallOffer.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ApiError(400, "bad_request", f"{where}: {err['msg']}" if where else err["msg"]) from e
    try:
        validate_pair(offer.source, offer.target)
    except LanguageError as e:
        raise ApiError(400, e.code, e.message) from e
    try:
        check_offer(offer.sdp)
    except SdpError as e:
        raise ApiError(400, "bad_sdp", f"Malformed SDP offer: {e}") from e

    call_id = uuid.uuid4().hex
    t_checked = time.perf_counter()
    try:
        result = await _pool(request).start_call(
            call_id, offer.sdp, offer.type, offer.source, offer.target
        )
    except NoAgentAvailable as e:
        raise ApiError(
            503, "no_agent", str(e), headers={"Retry-After": str(e.retry_after_s)}
        ) from e
    except CallRejected as e:
        raise ApiError(400, e.code, e.message) from e
    except AgentFailed as e:
        raise ApiError(
            503, "agent_failed", f"The interpreter failed to start: {e}", {"Retry-After": "1"}
        ) from e
    timings = result["timings_ms"]
    timings["validate"] = round((t_checked - t0) * 1000, 2)
    timings["total"] = round((time.perf_counter() - t0) * 1000, 2)
    return {"call_id": call_id, "sdp": result["sdp"], "type": "answer", "timings_ms": timings}


@router.delete("/v1/calls/{call_id}", status_code=204)
async def end_call(call_id: str, request: Request) -> Response:
    if not await _pool(request).end_call(call_id, "remote_hangup"):
        raise ApiError(404, "unknown_call", f"No active call {call_id!r}.")
    return Response(status_code=204)


@router.get("/v1/languages")
async def languages(request: Request) -> dict[str, Any]:
    s = request.app.state.settings
    return catalogue(s.default_source, s.default_target)


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    stats = _pool(request).stats()
    return {"status": "draining" if stats["draining"] else "ok", **stats}
