"""Supported languages, their names, and which pairs the local pipeline can serve.

Sources are languages Whisper recognises well enough at the "base" size. The local pipeline
translates with Whisper's own ``translate`` task, which only produces English, and speaks
with Piper's English voice; every other target needs a machine-translation provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from dragoman.contract.errors import LanguageError

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}

# Targets the local offline pipeline can speak: Whisper translate → English, Piper English.
LOCAL_TARGETS: frozenset[str] = frozenset({"en"})

DEFAULT_VOICES: dict[str, str] = {"en": "en_US-joe-medium"}


@dataclass(frozen=True)
class LanguagePair:
    """One-way: the caller speaks ``source``, hears ``target``. Conversation: two people
    share the call, one speaking ``source``, the other ``target``; each utterance is
    translated into the other language of the pair."""

    source: str
    target: str
    conversation: bool = False
    # A two-party room: this participant speaks ``source``; the other person hears ``target``
    # (what the pipeline cannot speak is captioned with a note, as in a conversation).
    room: bool = False

    @property
    def mode(self) -> str:
        if self.room:
            return "room"
        return "conversation" if self.conversation else "one_way"

    def other(self, lang: str) -> str:
        """The pair's other language (conversation mode)."""
        return self.target if lang == self.source else self.source


def name_of(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def target_unavailable_reason(
    target: str, targets: frozenset[str] = LOCAL_TARGETS, provider_title: str | None = None
) -> str | None:
    """Why ``target`` cannot be produced (by the local pipeline unless told otherwise)."""
    if target in targets:
        return None
    if provider_title is None:
        return (
            f"Translation into {name_of(target)} needs a machine-translation provider; the "
            "offline pipeline translates into English only (see README: Providers)."
        )
    return f"{provider_title} cannot translate into {name_of(target)}; pick another target."


def validate_pair(
    source: object,
    target: object,
    targets: frozenset[str] = LOCAL_TARGETS,
    provider_title: str | None = None,
) -> LanguagePair:
    """Check a requested pair; raise LanguageError with a message a person can act on."""
    for role, code in (("source", source), ("target", target)):
        if not isinstance(code, str) or code not in LANGUAGE_NAMES:
            known = ", ".join(sorted(LANGUAGE_NAMES))
            raise LanguageError(
                "unknown_language", f"Unknown {role} language {code!r}; supported: {known}."
            )
    assert isinstance(source, str) and isinstance(target, str)
    if source == target:
        raise LanguageError(
            "same_language", f"Source and target are both {name_of(source)}; pick two languages."
        )
    reason = target_unavailable_reason(target, targets, provider_title)
    if reason:
        raise LanguageError("unsupported_pair", reason)
    return LanguagePair(source, target)
