"""Who may start a call, and how often: tickets, request rates, concurrent calls.

Checked before a request costs anything (an agent, a provider session), in this order:
``Content-Type`` (415), the address's request rate (429), the ticket (401/403), the
subject's request rate (429), then, once the body is valid, the concurrent-call holds
(429). Counts live in the registry, so a fleet's api replicas share them. Over a limit
the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import Request

from dragoman.api.tickets import Ticket, TicketError, mint_control, verify, verify_control
from dragoman.config import Settings
from dragoman.fleet.limits import ConcurrencyRule, RateRule, client_address
from dragoman.fleet.registry import Registry
from dragoman.http.errors import ApiError

MINUTE_S = 60.0
HOUR_S = 3600.0
CONCURRENCY_RETRY_S = 10  # a running call frees its slot when it ends: no exact time
CONTROL_LINGER_S = 120.0  # a control token outlives its call's cap by this


@dataclass(frozen=True)
class Caller:
    address: str
    ticket: Ticket | None  # None when the server runs open

    @property
    def subject(self) -> str | None:
        return self.ticket.subject if self.ticket else None


def require_json(request: Request) -> None:
    """415 for anything but JSON: a cross-site form (text/plain, form-encoded) cannot post
    JSON without a CORS preflight, so it cannot start calls on a visitor's behalf."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the request body as JSON with 'Content-Type: application/json'.",
        )


async def check_request(request: Request) -> None:
    """What every call-making request passes before its ticket or body is read: JSON (415),
    then its address's request rate (429)."""
    settings = request.app.state.settings
    require_json(request)
    registry = request.app.state.dispatcher.registry
    await check_address_rate(registry, settings, address_of(request, settings))


def identify(request: Request, settings: Settings) -> Caller:
    """The caller's address and, when tickets are required, its verified ticket."""
    address = address_of(request, settings)
    if settings.call_token_secret is None:
        return Caller(address, None)
    token = bearer(
        request,
        "ticket_required",
        "This server needs a call ticket: 'Authorization: Bearer <ticket>'.",
    )
    try:
        ticket = verify(
            token,
            settings.call_token_secret.get_secret_value(),
            settings.call_token_max_ttl_s,
            settings.call_token_leeway_s,
        )
    except TicketError as e:
        raise ApiError(
            e.status, e.code, e.message, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from e
    return Caller(address, ticket)


def bearer(request: Request, code: str, message: str) -> str:
    """The token of ``Authorization: Bearer <token>``; 401 ``code`` without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, code, message, {"WWW-Authenticate": 'Bearer realm="dragoman"'})
    return token.strip()


def address_of(request: Request, settings: Settings) -> str:
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    return client_address(peer, forwarded, settings.trusted_proxy_hops)


def _too_many(what: str, retry_after_s: float) -> ApiError:
    wait = max(1, math.ceil(retry_after_s))
    return ApiError(
        429, "rate_limited", f"Too many {what}; retry in {wait} s.", {"Retry-After": str(wait)}
    )


async def check_address_rate(registry: Registry, settings: Settings, address: str) -> None:
    """Every call request counts, valid or not, before its ticket is even read: that is
    what a flood is made of."""
    rule = RateRule(f"calls:ip:{address}", settings.calls_per_minute_per_ip, MINUTE_S)
    await _take(registry, rule, "call requests")


async def check_subject_rate(registry: Registry, settings: Settings, caller: Caller) -> None:
    if caller.subject is not None:
        rule = RateRule(
            f"calls:sub:{caller.subject}", settings.calls_per_minute_per_subject, MINUTE_S
        )
        await _take(registry, rule, "call requests")


async def _take(registry: Registry, rule: RateRule, what: str) -> None:
    if rule.limit > 0:
        wait = await registry.take_rate(rule)
        if wait > 0:
            raise _too_many(what, wait)


def call_max_s(settings: Settings, caller: Caller) -> float:
    """This call's duration cap: the server's, lowered by the ticket's."""
    if caller.ticket is not None and caller.ticket.max_call_s is not None:
        return min(settings.max_call_s, caller.ticket.max_call_s)
    return settings.max_call_s


def hold_max_age_s(settings: Settings, caller: Caller) -> float:
    """The longest a concurrency hold counts: the call's cap and a minute."""
    return call_max_s(settings, caller) + MINUTE_S


async def hold_call(
    registry: Registry, settings: Settings, caller: Caller, call_id: str
) -> list[str]:
    """Count the call against its address and subject; returns the keys to ``release``."""
    rules = [ConcurrencyRule(f"calls:ip:{caller.address}", settings.concurrent_calls_per_ip)]
    if caller.subject is not None:
        rules.append(
            ConcurrencyRule(f"calls:sub:{caller.subject}", settings.concurrent_calls_per_subject)
        )
    held: list[str] = []
    max_age = hold_max_age_s(settings, caller)
    for rule in rules:
        if rule.limit <= 0:
            continue
        if not await registry.hold(rule, call_id, max_age, settings.reservation_ttl_s):
            await release(registry, held, call_id)
            raise _too_many("calls at once", CONCURRENCY_RETRY_S)
        held.append(rule.key)
    return held


async def release(registry: Registry, keys: list[str], call_id: str) -> None:
    """The call never started (refused, overflowed to direct mode): stop counting it."""
    for key in keys:
        await registry.unhold(key, call_id)


def check_provider(caller: Caller, provider: str) -> None:
    if caller.ticket is not None and not caller.ticket.allows_provider(provider):
        raise ApiError(
            403, "provider_not_allowed", f"This call ticket does not allow provider {provider!r}."
        )


def may_go_direct(caller: Caller) -> bool:
    """Open servers may; with tickets, only a ticket that says ``direct: true``."""
    return caller.ticket is None or caller.ticket.direct


async def check_direct(registry: Registry, settings: Settings, caller: Caller) -> None:
    """A direct session bills the operator's provider account: per subject per hour."""
    if not may_go_direct(caller):
        raise ApiError(403, "direct_not_allowed", "This call ticket does not allow direct mode.")
    who = f"sub:{caller.subject}" if caller.subject is not None else f"ip:{caller.address}"
    await _take(
        registry,
        RateRule(f"direct:{who}", settings.direct_sessions_per_hour, HOUR_S),
        "direct sessions",
    )


def control_token(settings: Settings, caller: Caller, call_id: str, random_token: str) -> str:
    """With tickets, a signed token bound to the call (checked by the api before it reaches
    the node); open, the random one (checked by the node)."""
    if settings.call_token_secret is None or caller.subject is None:
        return random_token
    secret = settings.call_token_secret.get_secret_value()
    return mint_control(
        secret, caller.subject, call_id, call_max_s(settings, caller) + CONTROL_LINGER_S
    )


def check_control(settings: Settings, call_id: str, token: str) -> TicketError | None:
    """Why ``token`` may not open ``call_id``'s control channel, or None."""
    if settings.call_token_secret is None:
        return None
    try:
        verify_control(
            token,
            settings.call_token_secret.get_secret_value(),
            call_id,
            settings.call_token_leeway_s,
        )
    except TicketError as e:
        return e
    return None


def check_hangup(request: Request, settings: Settings, call_id: str) -> None:
    """With tickets, ending a call (``DELETE``) needs that call's control token as
    ``Authorization: Bearer <control_token>``: 401 without one, 403 (or 401 for a forged or
    expired one) otherwise. Open, the call id is enough, as anyone may start a call."""
    if settings.call_token_secret is None:
        return
    token = bearer(
        request,
        "control_token_required",
        "Ending a call needs its control token: 'Authorization: Bearer <control_token>'.",
    )
    problem = check_control(settings, call_id, token)
    if problem is not None:
        raise ApiError(
            problem.status,
            problem.code,
            problem.message,
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
