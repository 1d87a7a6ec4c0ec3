"""Direct mode: the page talks to OpenAI's realtime translation itself, over WebRTC.

The server mints a short-lived client secret whose session config (model, output language,
input transcription) is fixed here, so the page can use it for exactly that and nothing else;
the API key never leaves the server. Used on request (``POST /v1/calls/direct``) and as
overflow when the fleet has no free slot, so a caller in a surge still gets a translation
while nodes boot.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from dragoman.agent import messages
from dragoman.api.errors import ApiError
from dragoman.config import Settings
from dragoman.languages import LanguagePair, validate_pair
from dragoman.pipeline.providers.catalog import PROVIDERS, direct_overflow_enabled
from dragoman.pipeline.providers.openai_translate import session_config

PROVIDER = "openai-translate"

log = logging.getLogger(__name__)


def direct_pair(source: object, target: object) -> LanguagePair:
    spec = PROVIDERS[PROVIDER]
    return validate_pair(source, target, spec.targets, spec.title)


def can_overflow(settings: Settings, pair: LanguagePair) -> bool:
    return direct_overflow_enabled(settings) and pair.target in PROVIDERS[PROVIDER].targets


async def mint_session(
    settings: Settings, http: httpx.AsyncClient, pair: LanguagePair, reason: str
) -> dict[str, Any]:
    """Ask OpenAI for an ephemeral client secret; returns the body the page needs."""
    if settings.openai_api_key is None:
        raise ApiError(
            503,
            "provider_unavailable",
            "Direct mode needs an OpenAI key on the server (DRAGOMAN_OPENAI_API_KEY).",
        )
    base = settings.openai_base_url.rstrip("/")
    body = {
        "expires_after": {"anchor": "created_at", "seconds": settings.direct_secret_ttl_s},
        "session": {"model": settings.openai_translate_model, **session_config(settings, pair)},
    }
    key = settings.openai_api_key.get_secret_value()
    try:
        resp = await http.post(
            f"{base}/realtime/translations/client_secrets",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=settings.provider_connect_timeout_s,
        )
    except httpx.HTTPError as e:
        raise _unavailable("provider_unavailable", f"{type(e).__name__}: {e}") from e
    if resp.status_code != 200:
        code = "provider_refused" if resp.status_code in (401, 403) else "provider_unavailable"
        raise _unavailable(code, _error_message(resp), resp.status_code)
    try:
        secret = resp.json()
        value, expires_at = str(secret["value"]), int(secret["expires_at"])
    except (ValueError, KeyError, TypeError) as e:
        raise _unavailable("provider_unavailable", f"unreadable answer: {e!r}") from e
    return {
        "mode": "direct",
        "reason": reason,
        "provider": PROVIDER,
        "source": pair.source,
        "target": pair.target,
        "client_secret": value,
        "expires_at": expires_at,
        "call_url": f"{base}/realtime/translations/calls",
    }


def _unavailable(code: str, detail: str, status: int | None = None) -> ApiError:
    """A 503 in our words (the HTTP status is ours to report); the provider's or the
    library's text, which can name the account or its organisation, goes to the log only."""
    log.warning("direct mode: minting a client secret failed: %s: %s", code, messages.clip(detail))
    message = messages.ERRORS[code]
    if status is not None:
        message = f"{message.removesuffix('.')} (HTTP {status})."
    return ApiError(503, code, message, {"Retry-After": "2"})


def _error_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text
