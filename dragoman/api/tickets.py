"""Call tickets: short-lived JWTs (HS256) that the operator's backend signs for its users.

With ``DRAGOMAN_CALL_TOKEN_SECRET`` set, creating a call, asking for a direct session and
opening a call's control channel each need one. Claims of a call ticket:

``sub``          who the call is for (limits count per subject); required
``exp``          expiry (seconds since the epoch); required, at most ``call_token_max_ttl_s``
                 after ``iat`` (or after now, without ``iat``)
``providers``    the providers this ticket may use; absent = any configured one
``direct``       true = may get a direct-mode session (on request or as overflow)
``max_call_s``   this call's duration cap, within the server's ``max_call_s``

The control channel's token is a ticket the server signs itself at call creation
(``scope: control``, bound to the call id), so a page can reconnect for the whole call
while the caller's ticket stays short-lived; a control token never opens a call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
CONTROL_SCOPE = "control"


class TicketError(Exception):
    """Why a ticket was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Ticket:
    subject: str
    expires_at: float
    providers: frozenset[str] | None = None  # None: any
    direct: bool = False
    max_call_s: float | None = None

    def allows_provider(self, name: str) -> bool:
        return self.providers is None or name in self.providers


def mint(
    secret: str,
    subject: str,
    ttl_s: float,
    *,
    providers: list[str] | None = None,
    direct: bool = False,
    max_call_s: float | None = None,
    now: float | None = None,
) -> str:
    """A call ticket, as an operator's backend would sign it (``dragoman token``, tests)."""
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iat": iat, "exp": iat + int(ttl_s)}
    if providers is not None:
        claims["providers"] = providers
    if direct:
        claims["direct"] = True
    if max_call_s is not None:
        claims["max_call_s"] = max_call_s
    return sign_claims(claims, secret)


def verify(token: str, secret: str, max_ttl_s: float, leeway_s: float) -> Ticket:
    """The ticket's claims if ``token`` is a valid call ticket, else TicketError (401/403)."""
    claims = _decode(token, secret, leeway_s)
    if claims.get("scope") == CONTROL_SCOPE:
        raise TicketError(403, "ticket_scope", "A control token cannot start a call.")
    issued = claims.get("iat", time.time())
    if not isinstance(issued, int | float) or claims["exp"] - issued > max_ttl_s + leeway_s:
        raise TicketError(
            401, "bad_ticket", f"The call ticket is valid for longer than {max_ttl_s:.0f} s."
        )
    subject = claims["sub"]
    providers = claims.get("providers")
    direct = claims.get("direct", False)
    max_call_s = claims.get("max_call_s")
    if not isinstance(subject, str) or not subject or len(subject) > 200:
        raise TicketError(401, "bad_ticket", "The call ticket's 'sub' must be a short string.")
    if providers is not None and (
        not isinstance(providers, list) or not all(isinstance(p, str) for p in providers)
    ):
        raise TicketError(401, "bad_ticket", "The call ticket's 'providers' must be a list.")
    if not isinstance(direct, bool):
        raise TicketError(401, "bad_ticket", "The call ticket's 'direct' must be true or false.")
    if max_call_s is not None and (
        isinstance(max_call_s, bool) or not isinstance(max_call_s, int | float) or max_call_s <= 0
    ):
        raise TicketError(401, "bad_ticket", "The call ticket's 'max_call_s' must be positive.")
    return Ticket(
        subject=subject,
        expires_at=float(claims["exp"]),
        providers=frozenset(providers) if providers is not None else None,
        direct=direct,
        max_call_s=float(max_call_s) if max_call_s is not None else None,
    )


def mint_control(secret: str, subject: str, call_id: str, ttl_s: float) -> str:
    """The token of one call's control channel (signed by the server at call creation)."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": CONTROL_SCOPE,
        "call": call_id,
        "iat": now,
        "exp": now + int(ttl_s),
    }
    return sign_claims(claims, secret)


def verify_control(token: str, secret: str, call_id: str, leeway_s: float) -> None:
    """TicketError unless ``token`` is this call's control token."""
    claims = _decode(token, secret, leeway_s)
    if claims.get("scope") != CONTROL_SCOPE or claims.get("call") != call_id:
        raise TicketError(403, "ticket_scope", "This token is not for this call's control.")


def sign_claims(claims: dict[str, Any], key: str | bytes) -> str:
    """An HS256 token of ``claims`` (call tickets, control tokens, room links)."""
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def decode_claims(
    token: str, key: str | bytes, require: list[str], leeway_s: float = 0.0
) -> dict[str, Any]:
    """The claims of an HS256 token signed with ``key`` that has the ``require``d claims;
    PyJWT's ``InvalidTokenError`` kinds otherwise, for the caller to answer in its terms."""
    return jwt.decode(
        token,
        key,
        algorithms=[ALGORITHM],  # never the token's own "alg": no "none", no key confusion
        options={"require": require},
        leeway=leeway_s,
    )


def _decode(token: str, secret: str, leeway_s: float) -> dict[str, Any]:
    try:
        return decode_claims(token, secret, ["exp", "sub"], leeway_s)
    except jwt.ExpiredSignatureError as e:
        raise TicketError(401, "ticket_expired", "The call ticket has expired.") from e
    except jwt.ImmatureSignatureError as e:
        raise TicketError(401, "bad_ticket", "The call ticket is not valid yet.") from e
    except jwt.InvalidSignatureError as e:
        raise TicketError(401, "bad_ticket", "The call ticket's signature is invalid.") from e
    except jwt.MissingRequiredClaimError as e:
        raise TicketError(401, "bad_ticket", f"The call ticket has no '{e.claim}' claim.") from e
    except jwt.InvalidTokenError as e:
        raise TicketError(401, "bad_ticket", "The call ticket is not a valid token.") from e
