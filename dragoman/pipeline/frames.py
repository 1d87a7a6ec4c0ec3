"""Frames of our own that travel through the Pipecat pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import DataFrame


@dataclass
class SpeakTranslationFrame(DataFrame):
    """A finished translation for the speaker stage to voice."""

    text: str = ""
    utterance_id: str = ""
    lang: str = "en"
    # time.monotonic() at each step so far (see messages.metrics): where the latency goes.
    marks: dict[str, float] = field(default_factory=dict)
