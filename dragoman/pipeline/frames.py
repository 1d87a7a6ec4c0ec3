"""What a provider stage says about a call, as frames: the source side rides Pipecat's own
transcription frames, speech Pipecat's TTS frames (``TTSStartedFrame``, ``TTSAudioRawFrame``,
``TTSStoppedFrame``); the rest, for which Pipecat has no frame, is defined here. All of it
ends at ``pipeline.page_messages.PageMessages``, which turns it into the page's messages.

Languages are our codes (``"ja"``), utterance ids are per call (``u3``, ``s2``, ``c1``) and
times are ms since the call started (0 when the provider gives none).

The translation caption, "translating" and errors are system frames, like Pipecat's urgent
transport messages: they reach the page the moment they are pushed, never held behind a
sentence a TTS service is still synthesising. What must stay in order with the source
captions (notes, the end of an utterance, latency marks) are data frames like them, and
our TTS services pass those on without queueing them behind speech (``PassesPageFrames``;
one that arrives while a sentence is being synthesised waits for it, ~0.2 s locally).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import (
    DataFrame,
    InterimTranscriptionFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
)

from dragoman.languages import name_of


@dataclass
class SourceTranscriptionFrame(TranscriptionFrame):
    """What was said in one utterance, final (its source caption; empty text withdraws a
    partial caption that came to nothing)."""

    utterance_id: str = ""
    t_start_ms: int = 0
    t_end_ms: int = 0


@dataclass
class InterimSourceTranscriptionFrame(InterimTranscriptionFrame):
    """What is being said so far in an utterance (a partial source caption)."""

    utterance_id: str = ""
    t_start_ms: int = 0
    t_end_ms: int = 0
    stable: int | None = None  # its committed prefix, in characters (simultaneous)


@dataclass
class TranslationFrame(SystemFrame):
    """The translation of an utterance as text (the translation caption): final, or partial
    when a streaming provider is still adding to it. Not a ``TextFrame``: no TTS service
    may speak it by accident; speech is asked for with ``SpeakTranslationFrame``, pushed
    after it (so the caption is on the page before the voice starts)."""

    text: str = ""
    language: str = ""
    utterance_id: str = ""
    final: bool = True
    t_start_ms: int = 0
    t_end_ms: int = 0
    stable: int | None = None  # a partial's committed prefix, in characters (simultaneous)


@dataclass
class SpeakTranslationFrame(TTSSpeakFrame):
    """A finished translation for the TTS service to voice, with where its latency went so
    far (``time.monotonic()`` at each step; see ``contract.page.metrics``)."""

    utterance_id: str = ""
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class LatencyMarksFrame(DataFrame):
    """An utterance's latency marks, complete once its first translated audio went out (a
    data frame: it follows that audio, from the TTS stage straight to ``PageMessages``)."""

    utterance_id: str = ""
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class TranslatingFrame(SystemFrame):
    """An utterance ended and went for translation."""

    utterance_id: str = ""


@dataclass
class NothingToSpeakFrame(DataFrame):
    """An utterance's translation came to no speech (nothing said, a language the provider
    cannot speak, a failure): the interpreter listens again."""

    utterance_id: str = ""


@dataclass
class NoteFrame(DataFrame):
    """Why an utterance is shown but not translated, for the page (``note``)."""

    utterance_id: str = ""
    code: str = ""
    message: str = ""


def needs_cloud_note(utterance_id: str, spoken: str, into: str) -> NoteFrame:
    """The offline pipeline cannot speak ``into``: never the source text passed off as a
    translation, the page says why not."""
    why = (
        f"Speaking {name_of(into)} needs a cloud provider (openai-cascade); this "
        f"{name_of(spoken)} sentence is shown untranslated."
    )
    return NoteFrame(utterance_id=utterance_id, code="needs_cloud_provider", message=why)


@dataclass
class CallErrorFrame(SystemFrame):
    """A failure the page is told about in our words: ``code`` is a key of
    ``contract.page.ERRORS``; ``detail`` (the provider's or the exception's words) goes to
    the log only. With ``end_reason`` the call ends after the page was told."""

    code: str = "provider_error"
    detail: object = None
    fatal: bool = False
    origin: str = ""
    end_reason: str | None = None


@dataclass
class ForwardedSpeechPlayedFrame(SystemFrame):
    """Upstream from the room router: the translated speech it forwarded to the other
    participant has had time to play there."""
