"""Which interpretation providers exist, what each covers, and what each needs configured.

Plain data, no Pipecat import: the API process reads it to answer ``GET /v1/languages`` and
to validate a call before dispatch; the agent process reads it again before building the
pipeline. The builders themselves live in one module per provider, imported lazily.

``PROVIDERS`` is the one list of providers: which have a direct mode and a ``dragoman
providers check`` probe is read off it. ``config`` sits below the pipeline, so it validates
against its own ``ProviderName`` / ``DirectProviderName``; this module refuses to import
unless those are exactly the specs' names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast, get_args

from dragoman.config import DirectProviderName, ProviderName, Settings
from dragoman.contract.calls import INTERPRETATIONS, Interpretation
from dragoman.contract.errors import InterpretationError, ProviderRejected, ProviderUnavailable
from dragoman.languages import (
    DEFAULT_VOICES,
    LANGUAGE_NAMES,
    LanguageError,
    LanguagePair,
    name_of,
    target_unavailable_reason,
    validate_pair,
)

if TYPE_CHECKING:  # Pipecat's side: the agent process's types
    from dragoman.pipeline.providers.base import CallContext
    from dragoman.pipeline.providers.base import Interpretation as Stage  # not the Literal
    from dragoman.pipeline.providers.streaming import SpeechProvider

ALL = frozenset(LANGUAGE_NAMES)
BOTH = frozenset(INTERPRETATIONS)
STREAMING = frozenset({"simultaneous"})

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
    # The module whose ``build(ctx)`` makes the per-call pipeline stage. A name, imported on
    # first use (``builder``): the api and worker processes import no Pipecat, and the
    # worker's forkserver preloads the modules of the providers its node can run by name.
    module: str
    note: str
    # Speech-to-speech services take the audio stream as is (silence included) and find
    # sentences themselves; running our VAD for them would cost CPU for nothing.
    uses_vad: bool = True
    # The rate the transport decodes the caller's audio to: what the provider wants, so no
    # second resampling step (16 kHz wherever the Silero VAD runs).
    input_rate: int = 16000
    # "simultaneous" (while the person talks) and/or "consecutive" (after each sentence).
    interpretations: frozenset[str] = BOTH
    # A conversation: each utterance interpreted into the pair's other language.
    conversation: bool = True
    # The browser can talk to it itself with a credential the server mints (direct mode,
    # also the overflow when the fleet is full): api/direct.py.
    direct: bool = False
    # ``dragoman providers check`` opens a session with it: its module has
    # ``speech_provider(settings)`` (a ``streaming.SpeechProvider``).
    checkable: bool = False

    def builder(self) -> Callable[[CallContext], Stage]:
        """The provider's ``build(ctx)``, its module imported now (in the agent process)."""
        return cast("Callable[[CallContext], Stage]", self._module().build)

    def speech_provider(self, settings: Settings) -> SpeechProvider:
        """The session opener ``providers check`` probes (``checkable`` providers)."""
        if not self.checkable:
            raise ValueError(f"{self.name} has no providers check probe")
        return cast("SpeechProvider", self._module().speech_provider(settings))

    def _module(self) -> Any:
        return importlib.import_module(self.module)


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
            module="dragoman.pipeline.providers.local.interpretation",
            note="Whisper's translate task only produces English.",
            interpretations=BOTH,
        ),
        ProviderSpec(
            name="openai-translate",
            title="OpenAI realtime translation (gpt-realtime-translate)",
            kind="speech-to-speech",
            sources=ALL,
            targets=OPENAI_TRANSLATE_TARGETS,
            key_setting="openai_api_key",
            module="dragoman.pipeline.providers.openai_translate",
            note="Continuous speech-to-speech translation over OpenAI's WebSocket endpoint.",
            uses_vad=False,
            input_rate=24000,
            interpretations=STREAMING,  # it translates as the words come, by nature
            conversation=False,
            direct=True,
            checkable=True,
        ),
        ProviderSpec(
            name="openai-cascade",
            title="OpenAI transcription → LLM translation → TTS",
            kind="cascade",
            sources=ALL,
            targets=ALL,
            key_setting="openai_api_key",
            module="dragoman.pipeline.providers.openai_cascade",
            note="Any pair; server-side prompt and glossary; voice of your choice.",
            interpretations=BOTH,
        ),
        ProviderSpec(
            name="gemini-live-translate",
            title="Gemini Live translation",
            kind="speech-to-speech",
            sources=ALL,
            targets=ALL,
            key_setting="gemini_api_key",
            module="dragoman.pipeline.providers.gemini_live",
            note="Continuous speech-to-speech translation over the Gemini Live WebSocket API.",
            uses_vad=False,
            interpretations=STREAMING,
            conversation=False,
            direct=True,
            checkable=True,
        ),
    )
}

# Read off the specs: the providers with a direct mode, and those ``providers check`` probes.
DIRECT_PROVIDERS = tuple(name for name, spec in PROVIDERS.items() if spec.direct)
CHECKED = tuple(name for name, spec in PROVIDERS.items() if spec.checkable)

# config validates DRAGOMAN_PROVIDER / DRAGOMAN_DIRECT_PROVIDER against names it holds itself
# (it may not import the pipeline): they must be these, or every setting would lie.
_NAMES = (tuple(PROVIDERS), DIRECT_PROVIDERS)
_CONFIG_NAMES = (get_args(ProviderName), get_args(DirectProviderName))
if _NAMES != _CONFIG_NAMES:
    raise RuntimeError(
        f"config's ProviderName / DirectProviderName {_CONFIG_NAMES} are not the "
        f"catalogue's providers / direct providers {_NAMES}"
    )


def unavailable_reason(spec: ProviderSpec, settings: Settings) -> str | None:
    """Why ``spec`` cannot take calls on this deployment, or None when it can."""
    if spec.key_setting and getattr(settings, spec.key_setting) is None:
        env = "DRAGOMAN_" + spec.key_setting.upper()
        return f"{spec.title} is not configured on this server (set {env})."
    return None


def resolve(name: str | None, settings: Settings) -> ProviderSpec:
    """The provider a call asked for (or the default); ProviderRejected or ProviderUnavailable
    when it cannot serve."""
    name = name or settings.provider
    spec = PROVIDERS.get(name)
    if spec is None:
        known = ", ".join(PROVIDERS)
        raise ProviderRejected("unknown_provider", f"Unknown provider {name!r}; known: {known}.")
    reason = unavailable_reason(spec, settings)
    if reason:
        raise ProviderUnavailable("provider_unavailable", reason)
    return spec


MODES = ("one_way", "conversation", "room")


def conversation_unavailable_reason(spec: ProviderSpec) -> str | None:
    """Why ``spec`` cannot interpret a conversation (each utterance into the pair's other
    language), or None."""
    if not spec.conversation:
        # Speech-to-speech services: one output language per session. A second session
        # routed by the identified language would double the provider bill and both would
        # hear every word.
        return (
            f"{spec.title} translates into one language per session, so it cannot interpret "
            "a conversation; use openai-cascade or the offline provider."
        )
    return None


def validate_for_mode(
    spec: ProviderSpec, source: object, target: object, mode: object
) -> LanguagePair:
    """The pair for a call in ``mode`` ("one_way" or "conversation"), or LanguageError."""
    title = None if spec.name == "local" else spec.title
    if mode not in MODES:
        raise LanguageError("bad_mode", f"Unknown mode {mode!r}; use 'one_way' or 'conversation'.")
    if mode == "one_way":
        return validate_pair(source, target, spec.targets, title)
    if mode == "room":
        # Each person has their own agent: one direction each, like one-way, except that a
        # direction the provider cannot speak is captioned with a note (the other person's
        # direction may still be spoken).
        speakable = spec.targets if spec.kind == "speech-to-speech" else ALL
        pair = validate_pair(source, target, speakable, title)
        return LanguagePair(pair.source, pair.target, room=True)
    reason = conversation_unavailable_reason(spec)
    if reason:
        raise LanguageError("mode_unsupported", reason)
    pair = validate_pair(source, target, ALL, title)  # known and different
    if pair.source not in spec.targets and pair.target not in spec.targets:
        spoken = ", ".join(name_of(c) for c in sorted(spec.targets))
        raise LanguageError(
            "unsupported_pair",
            f"The offline pipeline speaks only {spoken}, so a conversation needs {spoken} on "
            f"one side; {name_of(pair.source)} ⇄ {name_of(pair.target)} needs openai-cascade.",
        )
    return LanguagePair(pair.source, pair.target, conversation=True)


# What each call mode allows and starts with. A conversation is one shared device: its turns
# are what language identification and the echo guard work on, so it stays consecutive.
MODE_INTERPRETATIONS: dict[str, frozenset[str]] = {
    "one_way": BOTH,
    "room": BOTH,
    "conversation": frozenset({"consecutive"}),
}
DEFAULT_INTERPRETATION: dict[str, Interpretation] = {
    "one_way": "simultaneous",
    "room": "simultaneous",
    "conversation": "consecutive",
}
_HOW = {"simultaneous": "simultaneously", "consecutive": "consecutively"}


def interpretations_for(spec: ProviderSpec, mode: str) -> frozenset[str]:
    """The interpretations a call in ``mode`` through ``spec`` may use."""
    return spec.interpretations & MODE_INTERPRETATIONS.get(mode, BOTH)


def resolve_interpretation(
    spec: ProviderSpec, mode: str, requested: object = None
) -> Interpretation:
    """The interpretation of a call in ``mode`` (validated already) through ``spec``: the one
    requested, or the mode's default (simultaneous; a conversation consecutive) where it
    names none; InterpretationError when the provider or the mode cannot serve it."""
    allowed = interpretations_for(spec, mode)
    if requested is None:
        default = DEFAULT_INTERPRETATION.get(mode, "simultaneous")
        if default in allowed or not allowed:
            return default
        return next(i for i in INTERPRETATIONS if i in allowed)  # the provider's only one
    if requested not in INTERPRETATIONS:
        raise InterpretationError(
            "bad_interpretation",
            f"Unknown interpretation {requested!r}; use 'simultaneous' or 'consecutive'.",
        )
    if requested not in spec.interpretations:
        only = " or ".join(_HOW[i] for i in INTERPRETATIONS if i in spec.interpretations)
        raise InterpretationError(
            "unsupported_interpretation",
            f"{spec.title} interprets only {only}; it cannot interpret {_HOW[requested]}.",
        )
    if requested not in allowed:
        raise InterpretationError(
            "unsupported_interpretation",
            "A conversation on one device is interpreted consecutively (turn by turn: each "
            "sentence's language is identified once it ends); use one-way or a room for "
            "simultaneous interpretation.",
        )
    return cast(Interpretation, requested)


def interpretation_reason(spec: ProviderSpec) -> str | None:
    """Why a page offers ``spec`` only one interpretation, or None."""
    if spec.interpretations == BOTH:
        return None
    (only,) = spec.interpretations
    return f"{spec.title} interprets only {_HOW[only]}: it translates as the words come."


def validate_call(
    provider: str | None,
    source: object,
    target: object,
    settings: Settings,
    mode: object = "one_way",
) -> tuple[ProviderSpec, LanguagePair]:
    spec = resolve(provider, settings)
    return spec, validate_for_mode(spec, source, target, mode)


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
            "conversation": conversation_unavailable_reason(spec) is None,
            "interpretations": [i for i in INTERPRETATIONS if i in spec.interpretations],
            # Per call mode this provider serves: what a call gets when it names none.
            "interpretation_defaults": {
                m: resolve_interpretation(spec, m)
                for m in MODES
                if m != "conversation" or conversation_unavailable_reason(spec) is None
            },
        }
        if why:
            item["reason"] = why
        if not item["conversation"]:
            item["conversation_reason"] = conversation_unavailable_reason(spec)
        if interpretation_reason(spec):
            item["interpretation_reason"] = interpretation_reason(spec)
        providers.append(item)
    return {
        "sources": _language_list(default.sources),
        "targets": targets,
        "default_source": settings.default_source,
        "default_target": settings.default_target,
        "provider": default.name,
        "providers": providers,
        "interpretations": list(INTERPRETATIONS),
        "interpretation_defaults": dict(DEFAULT_INTERPRETATION),
        "direct": {
            "overflow": direct_overflow_enabled(settings),
            "provider": settings.direct_provider,
            "providers": [p for p in DIRECT_PROVIDERS if direct_usable(p, settings)],
        },
    }


def direct_usable(name: str, settings: Settings) -> bool:
    return name in DIRECT_PROVIDERS and unavailable_reason(PROVIDERS[name], settings) is None


def direct_overflow_enabled(settings: Settings) -> bool:
    """Direct mode is offered when the fleet is full only if it is switched on and usable."""
    return settings.direct_overflow and any(direct_usable(p, settings) for p in DIRECT_PROVIDERS)
