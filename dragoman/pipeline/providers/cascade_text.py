"""What both modes of ``openai-cascade`` share around the translator: the provider's name,
the system prompt (language names + the call's glossary) and how a refused key is reported."""

from __future__ import annotations

from dragoman.languages import LanguagePair, name_of
from dragoman.pipeline.frames import CallErrorFrame

NAME = "openai-cascade"
REFUSED = ("401", "403", "invalid_api_key", "Incorrect API key")


def system_prompt(template: str, pair: LanguagePair, glossary: str | None) -> str:
    prompt = template.format(source=name_of(pair.source), target=name_of(pair.target))
    if glossary:
        prompt += (
            "\n\nUse these translations for the following terms "
            f"(one 'term = translation' per line):\n{glossary}"
        )
    return prompt


def refused(detail: object) -> CallErrorFrame:
    """The key was refused: the page is told, then the call ends."""
    return CallErrorFrame(
        code="provider_refused",
        detail=detail,
        fatal=True,
        origin=NAME,
        end_reason="provider_error",
    )
