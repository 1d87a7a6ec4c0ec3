"""Direct mode: the page talks to a speech-to-speech provider itself.

The server mints a short-lived credential whose session config is fixed here (model, output
language, transcription), so the page can use it for exactly that and nothing else; the API
key never leaves the server. Two providers can serve it, each through its official SDK:

- ``openai-translate``: a realtime translation client secret
  (``client.realtime.translations.client_secrets.create``); the page speaks WebRTC to
  OpenAI with it.
- ``gemini-live-translate``: a one-use ephemeral token (``client.aio.auth_tokens.create``,
  v1alpha) locking the model, the target language and both transcriptions; the page speaks
  the Live API over WebSocket to the constrained endpoint (``web/gemini_direct.js``).

Used on request (``POST /v1/calls/direct``) and as overflow when the fleet has no free slot,
so a caller in a surge still gets a translation while nodes boot.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import openai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from dragoman.config import Settings
from dragoman.contract import page
from dragoman.contract.errors import LanguageError, ProviderRejected
from dragoman.http.errors import ApiError
from dragoman.languages import LanguagePair, validate_pair
from dragoman.pipeline.providers import sdk_sessions as sdk
from dragoman.pipeline.providers.catalog import (
    DIRECT_PROVIDERS,
    PROVIDERS,
    unavailable_reason,
)

log = logging.getLogger(__name__)


class ProviderClients:
    """The SDK clients that mint direct-mode credentials: one set per api process, made on
    first use (an SDK client pools its connections)."""

    def __init__(
        self,
        settings: Settings,
        openai_client: openai.AsyncOpenAI | None = None,
        gemini_client: Any = None,
    ) -> None:
        self._settings = settings
        self._openai = openai_client
        self._gemini = gemini_client

    def openai(self) -> openai.AsyncOpenAI:
        if self._openai is None:
            self._openai = sdk.openai_client(self._settings)
        return self._openai

    def gemini(self) -> Any:
        if self._gemini is None:
            self._gemini = sdk.gemini_client(self._settings, api_version=sdk.TOKEN_API_VERSION)
        return self._gemini

    async def aclose(self) -> None:
        if self._openai is not None:
            await self._openai.close()


def _usable(name: str, settings: Settings) -> bool:
    return unavailable_reason(PROVIDERS[name], settings) is None


def choose(
    settings: Settings,
    source: object,
    target: object,
    wanted: str | None = None,
    allowed: Callable[[str], bool] = lambda _name: True,
) -> tuple[str, LanguagePair]:
    """The direct provider and validated pair for a request. ``wanted``: the provider the
    caller named (only that one is tried); otherwise ``direct_provider`` first, then the
    other, preferring configured ones this caller may use. A provider without its key is
    still chosen when no other is: minting then answers 503 (after admission counted the
    request). LanguageError when the pair is not one the chosen providers speak,
    ProviderRejected for a provider without a direct mode."""
    if wanted is not None and wanted not in DIRECT_PROVIDERS:
        known = ", ".join(DIRECT_PROVIDERS)
        raise ProviderRejected(
            "unknown_provider", f"Direct mode is offered by {known}, not {wanted!r}."
        )
    order = [wanted] if wanted else _order(settings)
    usable = [name for name in order if _usable(name, settings)]
    candidates = [name for name in usable if allowed(name)] or usable or order[:1]
    first_error: LanguageError | None = None
    for name in candidates:
        spec = PROVIDERS[name]
        try:
            return name, validate_pair(source, target, spec.targets, spec.title)
        except LanguageError as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error


def _order(settings: Settings, first: str | None = None) -> list[str]:
    order = [first] if first in DIRECT_PROVIDERS else []
    order.append(settings.direct_provider)
    return order + [p for p in DIRECT_PROVIDERS if p not in order]


def overflow_provider(
    settings: Settings,
    pair: LanguagePair,
    call_provider: str,
    allowed: Callable[[str], bool] = lambda _name: True,
) -> str | None:
    """The provider a call the fleet cannot take goes to directly: its own provider when it
    has a direct mode, else ``direct_provider``, else the other; None when overflow is off
    or none is configured, allowed and speaks the target."""
    if not settings.direct_overflow:
        return None
    for name in _order(settings, call_provider):
        if _usable(name, settings) and allowed(name) and pair.target in PROVIDERS[name].targets:
            return name
    return None


async def mint_session(
    settings: Settings,
    clients: ProviderClients,
    provider: str,
    pair: LanguagePair,
    reason: str,
    max_call_s: float | None = None,
) -> dict[str, Any]:
    """Mint a short-lived credential for ``provider``; returns the body the page needs."""
    if not _usable(provider, settings):
        raise ApiError(
            503, "provider_unavailable", unavailable_reason(PROVIDERS[provider], settings) or ""
        )
    body: dict[str, Any] = {
        "mode": "direct",
        "reason": reason,
        "provider": provider,
        "source": pair.source,
        "target": pair.target,
    }
    if provider == sdk.GEMINI_LIVE_TRANSLATE:
        cap = max_call_s if max_call_s is not None else settings.max_call_s
        return body | await _mint_gemini(settings, clients, pair, cap)
    return body | await _mint_openai(settings, clients, pair)


async def _mint_openai(
    settings: Settings, clients: ProviderClients, pair: LanguagePair
) -> dict[str, Any]:
    session: Any = {
        "model": settings.openai_translate_model,
        **sdk.openai_translation_param(settings, pair),
    }
    try:
        secret = await clients.openai().realtime.translations.client_secrets.create(
            session=session,
            expires_after={"anchor": "created_at", "seconds": settings.direct_secret_ttl_s},
        )
    except openai.APIStatusError as e:
        code = "provider_refused" if e.status_code in (401, 403) else "provider_unavailable"
        raise _unavailable(code, e.message, e.status_code) from e
    except openai.OpenAIError as e:  # unreachable, timed out, or an unreadable answer
        raise _unavailable("provider_unavailable", f"{type(e).__name__}: {e}") from e
    value, expires_at = getattr(secret, "value", None), getattr(secret, "expires_at", None)
    if not isinstance(value, str) or not isinstance(expires_at, int):
        raise _unavailable("provider_unavailable", f"unreadable answer: {secret!r}")
    base = settings.openai_base_url.rstrip("/")
    return {
        "client_secret": value,
        "expires_at": expires_at,
        "call_url": f"{base}/realtime/translations/calls",
    }


def gemini_setup(settings: Settings, pair: LanguagePair) -> dict[str, Any]:
    """The Live API ``setup`` the page sends (the SDK's ``LiveClientSetup``, as JSON): the
    same session as ``sdk.gemini_live_config``, which the token locks anyway."""
    config = sdk.gemini_live_config(pair)
    setup = genai_types.LiveClientSetup(
        model=sdk.gemini_model_name(settings),
        generation_config=genai_types.GenerationConfig(
            response_modalities=config.response_modalities,
            translation_config=config.translation_config,
        ),
        input_audio_transcription=config.input_audio_transcription,
        output_audio_transcription=config.output_audio_transcription,
    )
    return setup.model_dump(mode="json", by_alias=True, exclude_none=True)


def gemini_constrained_url(settings: Settings) -> str:
    """The Live API endpoint an ephemeral token opens (the browser adds ``access_token``)."""
    host = sdk.gemini_http_base(settings.gemini_base_url).split("://", 1)[-1]
    version = sdk.TOKEN_API_VERSION
    return (
        f"wss://{host}/ws/google.ai.generativelanguage.{version}"
        ".GenerativeService.BidiGenerateContentConstrained"
    )


async def _mint_gemini(
    settings: Settings, clients: ProviderClients, pair: LanguagePair, max_call_s: float
) -> dict[str, Any]:
    now = time.time()
    start_by = now + settings.direct_secret_ttl_s  # a session must start by then
    config = genai_types.CreateAuthTokenConfig(
        uses=1,
        # The token also ends the session it opened: the call's duration cap.
        expire_time=dt.datetime.fromtimestamp(now + max_call_s, dt.UTC),
        new_session_expire_time=dt.datetime.fromtimestamp(start_by, dt.UTC),
        live_connect_constraints=genai_types.LiveConnectConstraints(
            model=sdk.gemini_model_name(settings), config=sdk.gemini_live_config(pair)
        ),
        lock_additional_fields=[],  # lock every field set above, nothing else
    )
    try:
        with warnings.catch_warnings():  # "ephemeral tokens are experimental", each time
            warnings.simplefilter("ignore", genai_errors.ExperimentalWarning)
            token = await clients.gemini().aio.auth_tokens.create(config=config)
    except genai_errors.APIError as e:
        status = e.code if isinstance(e.code, int) else None
        code = "provider_refused" if status in (401, 403) else "provider_unavailable"
        raise _unavailable(code, f"{e.status}: {e.message}", status) from e
    except Exception as e:  # the SDK's transport (aiohttp or httpx) failed: unreachable
        raise _unavailable("provider_unavailable", f"{type(e).__name__}: {e}") from e
    if not isinstance(token.name, str) or not token.name.startswith("auth_tokens/"):
        raise _unavailable("provider_unavailable", f"unreadable answer: {token!r}")
    return {
        "client_secret": token.name,
        "expires_at": int(start_by),
        "call_url": gemini_constrained_url(settings),
        "setup": gemini_setup(settings, pair),
    }


def _unavailable(code: str, detail: str, status: int | None = None) -> ApiError:
    """A 503 in our words (the HTTP status is ours to report); the provider's or the
    library's text, which can name the account or its organisation, goes to the log only."""
    log.warning("direct mode: minting a client secret failed: %s: %s", code, page.clip(detail))
    message = page.ERRORS[code]
    if status is not None:
        message = f"{message.removesuffix('.')} (HTTP {status})."
    return ApiError(503, code, message, {"Retry-After": "2"})
