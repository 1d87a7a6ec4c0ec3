"""Why a call could not be placed, and the one table of how each reason reads as HTTP.

The api answers the caller with ``to_http``; the worker's internal endpoint answers the api
with the same table, and ``fleet.worker_client`` reads a worker's answer back into the same
exceptions with ``from_http``. Refusals of the request itself (``CallRejected`` and its
kinds: languages, providers, interpretations, glossaries) carry the API's error ``code`` and
a message a person can act on: 400, or ``status`` where a kind sets its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("dragoman.errors")


class CallRejected(ValueError):
    """The request itself cannot be served (malformed SDP, a bad language pair, an unknown
    glossary, ...): 400 with ``code``. ValueError: it is a bad value the caller sent."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LanguageError(CallRejected):
    """A language code, pair or interpretation mode the service cannot serve."""


class ProviderRejected(CallRejected):
    """A provider name this server does not know (or that cannot serve this mode)."""


class ProviderUnavailable(CallRejected):
    """A known provider this server is not configured for (no key): 503, not the caller's
    fault."""

    status = 503


class InterpretationError(CallRejected):
    """An interpretation (simultaneous | consecutive) that is unknown, or that the provider or
    the call mode cannot serve (``bad_interpretation``, ``unsupported_interpretation``)."""


class GlossaryError(CallRejected):
    """A glossary name that is malformed, unknown on this server, or a file too large."""


class NoAgentAvailable(Exception):
    """No free call slot anywhere (or the node is draining): 503 with Retry-After. ``code``:
    ``no_agent``, or ``no_local_capacity`` when only local-pipeline capacity is full."""

    def __init__(self, message: str, retry_after_s: int, code: str = "no_agent") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.code = code


class AgentFailed(Exception):
    """The agent (or its whole node) died or stalled before answering."""


class UnknownCall(Exception):
    """No such call (anymore): 404."""


class WrongCallToken(Exception):
    """The call exists but the token presented for it is not its control token: 403."""


class RegistryUnavailable(Exception):
    """The registry's backend cannot be reached in time; the API answers 503 rather than hang."""


# Everything ``to_http`` maps: what an endpoint that places, ends or invites calls catches.
FLEET_ERRORS = (
    CallRejected,
    NoAgentAvailable,
    AgentFailed,
    UnknownCall,
    WrongCallToken,
    RegistryUnavailable,
)

# Failures inside the fleet are logged with their detail (addresses, exception text) and
# answered with a fixed sentence: a caller learns what to do, not how the fleet is built.
AGENT_FAILED_MESSAGE = "The interpreter failed to start; try again in a moment."
REGISTRY_UNAVAILABLE_MESSAGE = "The call registry is unavailable; try again in a moment."


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """Every HTTP error answer's body (api, worker, inference service): ``code`` for programs,
    ``message`` for people."""
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True)
class HttpError:
    """An error answer: ``{"error": {"code", "message"}}`` with ``status`` and headers."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def to_http(e: Exception) -> HttpError:
    """The HTTP answer for a fleet error (``FLEET_ERRORS``); TypeError for anything else."""
    if isinstance(e, CallRejected):
        return HttpError(e.status, e.code, e.message)
    if isinstance(e, NoAgentAvailable):
        return HttpError(503, e.code, str(e), {"Retry-After": str(e.retry_after_s)})
    if isinstance(e, UnknownCall):
        return HttpError(404, "unknown_call", f"No active call {e}.")
    if isinstance(e, WrongCallToken):
        return HttpError(403, "wrong_call_token", "That is not this call's token.")
    if isinstance(e, AgentFailed):
        log.warning("agent failed: %s", e)
        return HttpError(503, "agent_failed", AGENT_FAILED_MESSAGE, {"Retry-After": "1"})
    if isinstance(e, RegistryUnavailable):
        log.warning("registry unavailable: %s", e)
        message = REGISTRY_UNAVAILABLE_MESSAGE
        return HttpError(503, "registry_unavailable", message, {"Retry-After": "1"})
    raise TypeError(f"not a fleet error: {e!r}")


def from_http(
    status: int, code: str, message: str, retry_after: str | None, call_id: str
) -> Exception:
    """A worker's error answer read back into the exception ``to_http`` made it from.
    Anything else (a proxy's 502, a crash's 500) is the worker failing: AgentFailed."""
    if status == 404 and code == "unknown_call":
        return UnknownCall(call_id)
    if status == 403 and code == "wrong_call_token":
        return WrongCallToken(call_id)
    if status == 400:
        return CallRejected(code or "bad_request", message)
    if status == 503 and code not in ("agent_failed", "registry_unavailable"):
        return NoAgentAvailable(message, int(retry_after or "1"))
    return AgentFailed(f"answered {status}: {message}")
