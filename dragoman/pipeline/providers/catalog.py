"""Which interpretation providers exist, what each covers, and what each needs configured.

Plain data, no Pipecat import: the API process reads it to answer ``GET /v1/languages`` and
to validate a call before dispatch; the agent process reads it again before building the
pipeline. The builders themselves live in one module per provider, imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

from dragoman.config import Settings
from dragoman.languages import (
    DEFAULT_VOICES,
    LANGUAGE_NAMES,
    LanguageError,
    LanguagePair,
    name_of,
    target_unavailable_reason,
    validate_pair,
)

ALL = frozenset(LANGUAGE_NAMES)

# gpt-realtime-translate output languages (OpenAI realtime translation guide, 2026-11);
# input is auto-detected from 70+ languages.
OPENAI_TRANSLATE_TARGETS = frozenset(
    {"de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "vi", "zh"}
)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    title: str
    kind: str  # "local" | "speech-to-speech" | "cascade"
    sources: frozenset[str]
    targets: frozenset[str]
    key_setting: str | None  # the Settings field that must be set, e.g. "openai_api_key"
    builder: str  # "module:function" building the per-call pipeline stage
    note: str
    # Speech-to-speech services take the audio stream as is (silence included) and find
    # sentences themselves; running our VAD for them would cost CPU for nothing.
    uses_vad: bool = True
    # The rate the transport decodes the caller's audio to: what the provider wants, so no
    # second resampling step (16 kHz wherever the Silero VAD runs).
    input_rate: int = 16000


PROVIDERS: dict[str, ProviderSpec] = {
    p.name: p
    for p in (
        ProviderSpec(
            name="local",
            title="Offline (Whisper base + Piper, on this server)",
            kind="local",
            sources=ALL,
            targets=frozenset({"en"}),
            key_setting=None,
            builder="dragoman.pipeline.providers.local:build",
            note="Whisper's translate task only produces English.",
        ),
        ProviderSpec(
            name="openai-translate",
            title="OpenAI realtime translation (gpt-realtime-translate)",
            kind="speech-to-speech",
            sources=ALL,
            targets=OPENAI_TRANSLATE_TARGETS,
            key_setting="openai_api_key",
            builder="dragoman.pipeline.providers.openai_translate:build",
            note="Continuous speech-to-speech translation over OpenAI's WebSocket endpoint.",
            uses_vad=False,
            input_rate=24000,
        ),
        ProviderSpec(
            name="openai-cascade",
            title="OpenAI transcription → LLM translation → TTS",
            kind="cascade",
            sources=ALL,
            targets=ALL,
            key_setting="openai_api_key",
            builder="dragoman.pipeline.providers.openai_cascade:build",
            note="Any pair; server-side prompt and glossary; voice of your choice.",
        ),
        ProviderSpec(
            name="gemini-live-translate",
            title="Gemini Live translation",
            kind="speech-to-speech",
            sources=ALL,
            targets=ALL,
            key_setting="gemini_api_key",
            builder="dragoman.pipeline.providers.gemini_live:build",
            note="Continuous speech-to-speech translation over the Gemini Live WebSocket API.",
            uses_vad=False,
        ),
    )
}


def unavailable_reason(spec: ProviderSpec, settings: Settings) -> str | None:
    """Why ``spec`` cannot take calls on this deployment, or None when it can."""
    if spec.key_setting and getattr(settings, spec.key_setting) is None:
        env = "DRAGOMAN_" + spec.key_setting.upper()
        return f"{spec.title} is not configured on this server (set {env})."
    return None


def resolve(name: str | None, settings: Settings) -> ProviderSpec:
    """The provider a call asked for (or the default); LanguageError when it cannot serve."""
    name = name or settings.provider
    spec = PROVIDERS.get(name)
    if spec is None:
        known = ", ".join(PROVIDERS)
        raise LanguageError("unknown_provider", f"Unknown provider {name!r}; known: {known}.")
    reason = unavailable_reason(spec, settings)
    if reason:
        raise LanguageError("provider_unavailable", reason)
    return spec


def validate_call(
    provider: str | None, source: object, target: object, settings: Settings
) -> tuple[ProviderSpec, LanguagePair]:
    spec = resolve(provider, settings)
    title = None if spec.name == "local" else spec.title
    return spec, validate_pair(source, target, spec.targets, title)


def _language_list(codes: frozenset[str]) -> list[dict[str, str]]:
    return [{"code": c, "name": name_of(c)} for c in sorted(codes, key=name_of)]


def catalogue(settings: Settings) -> dict[str, object]:
    """The body of ``GET /v1/languages``: languages of the default provider, and every
    provider with what it covers and whether this server can use it."""
    default = PROVIDERS[settings.provider]
    title = None if default.name == "local" else default.title
    targets = []
    for code in sorted(LANGUAGE_NAMES, key=name_of):
        reason = target_unavailable_reason(code, default.targets, title)
        entry: dict[str, object] = {"code": code, "name": name_of(code), "available": not reason}
        if reason:
            entry["reason"] = reason
        elif default.name == "local":
            entry["voice"] = DEFAULT_VOICES.get(code)
        targets.append(entry)
    providers = []
    for spec in PROVIDERS.values():
        why = unavailable_reason(spec, settings)
        item: dict[str, object] = {
            "name": spec.name,
            "title": spec.title,
            "kind": spec.kind,
            "available": why is None,
            "sources": sorted(spec.sources),
            "targets": sorted(spec.targets),
            "note": spec.note,
        }
        if why:
            item["reason"] = why
        providers.append(item)
    return {
        "sources": _language_list(default.sources),
        "targets": targets,
        "default_source": settings.default_source,
        "default_target": settings.default_target,
        "provider": default.name,
        "providers": providers,
        "direct": {"overflow": direct_overflow_enabled(settings), "provider": "openai-translate"},
    }


def direct_overflow_enabled(settings: Settings) -> bool:
    """Direct mode is offered when the fleet is full only if it is switched on and usable."""
    return settings.direct_overflow and settings.openai_api_key is not None
