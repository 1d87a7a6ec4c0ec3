"""Two-party rooms: ``POST /v1/calls/{id}/invite`` turns a call into a room and returns a
link; the second person opens it, picks their language and calls with its token.

The link is a capability: a token the api signs (HS256, a key derived from the internal
token the api replicas share, or a per-process random one under ``serve``) naming the host's
call, the slot reserved for the guest next to it, the host's language and provider, and an
expiry. No room state lives in the api; the node holds the reserved slot and links the two
agents when the guest's call arrives.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from dragoman.api import admission
from dragoman.api.tickets import decode_claims, sign_claims
from dragoman.contract.errors import AgentFailed, RegistryUnavailable
from dragoman.http.body import documented, json_body
from dragoman.http.errors import ApiError, answers
from dragoman.languages import name_of

router = APIRouter()
SCOPE = "room"


@dataclass(frozen=True)
class Invitation:
    host_call_id: str
    guest_call_id: str
    language: str  # what the host speaks: the guest hears it translated, and speaks to it
    provider: str
    expires_at: float


def room_key(internal_token: str | None) -> bytes:
    """The signing key of room links: shared by api replicas, unlike anything else."""
    base = internal_token or secrets.token_hex(32)
    return hashlib.sha256(b"dragoman room links\0" + base.encode()).digest()


def sign(inv: Invitation, key: bytes) -> str:
    claims = {
        "scope": SCOPE,
        "host": inv.host_call_id,
        "guest": inv.guest_call_id,
        "lang": inv.language,
        "provider": inv.provider,
        "exp": int(inv.expires_at),
    }
    return sign_claims(claims, key)


def verify(token: str, key: bytes) -> Invitation:
    """The invitation behind a room link; ApiError 410 when expired, 404 when not one."""
    try:
        c = decode_claims(token, key, ["exp"])
    except jwt.ExpiredSignatureError as e:
        raise ApiError(
            410, "room_expired", "This invitation has expired; ask for a new one."
        ) from e
    except jwt.InvalidTokenError as e:
        raise ApiError(404, "unknown_room", "This is not a valid invitation link.") from e
    if c.get("scope") != SCOPE or not all(
        isinstance(c.get(k), str) for k in ("host", "guest", "lang", "provider")
    ):
        raise ApiError(404, "unknown_room", "This is not a valid invitation link.")
    return Invitation(c["host"], c["guest"], c["lang"], c["provider"], float(c["exp"]))


class InviteBody(BaseModel):
    control_token: str = ""  # the call's, from its answer


# JSON (415), then the address's request rate (429), before the body is read.
@router.post(
    "/v1/calls/{call_id}/invite",
    dependencies=[Depends(admission.check_request)],
    responses=answers(400, 403, 404, 413, 415, 429, 503),
    openapi_extra=documented(InviteBody),
)
async def invite(
    call_id: str, request: Request, body: Annotated[InviteBody, Depends(json_body(InviteBody))]
) -> dict[str, Any]:
    """Body ``{"control_token"}`` (the answer's): only the caller can invite to its call."""
    settings = request.app.state.settings
    dispatcher = request.app.state.dispatcher
    token = body.control_token
    if not token:
        raise ApiError(400, "bad_request", "control_token: the call's control token is required.")
    problem = admission.check_control(settings, call_id, token)
    if problem is not None:
        raise ApiError(403, "wrong_call_token", problem.message)
    ttl = settings.room_invite_ttl_s
    try:
        placed = await dispatcher.invite(call_id, token, ttl)
    except (AgentFailed, RegistryUnavailable) as e:  # the others answer by the table
        raise ApiError(503, "unavailable", "The call's server cannot be reached; try again.") from e
    inv = Invitation(
        host_call_id=call_id,
        guest_call_id=placed.guest_call_id,
        language=placed.language,
        provider=placed.provider,
        expires_at=time.time() + ttl,
    )
    room = sign(inv, request.app.state.room_key)
    return {
        "room_token": room,
        "room_url": f"/?room={room}",
        "language": inv.language,
        "expires_at": int(inv.expires_at),
    }


@router.get("/v1/rooms/{room}", responses=answers(404, 410))
async def room_info(room: str, request: Request) -> dict[str, Any]:
    """What the invitation page shows before the guest calls."""
    inv = verify(room, request.app.state.room_key)
    return {
        "language": inv.language,
        "language_name": name_of(inv.language),
        "provider": inv.provider,
        "expires_at": int(inv.expires_at),
    }
