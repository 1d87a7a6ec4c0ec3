"""Our TTS services let the page's data frames by: Pipecat's ``TTSService`` queues the frames
it does not know behind the speech it is making (so they come out after that audio), which
would hold a source caption, a note or "listening" until a sentence had been synthesised.
They are for the page, not for the speech: passed on as soon as the stage reads them.

The stage reads no data frame while it synthesises, though (Pipecat's ``TTSService`` runs
``run_tts`` inside ``process_frame``): a source caption, note or "nothing to speak" that
arrives meanwhile waits for that sentence — Piper makes one in about 0.2 s. (The old
speaker synthesised in a task of its own; the system frames — translation caption,
"translating", errors — still overtake.)"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService

from dragoman.pipeline.frames import (
    InterimSourceTranscriptionFrame,
    NoteFrame,
    NothingToSpeakFrame,
    SourceTranscriptionFrame,
)

PAGE_DATA_FRAMES = (
    SourceTranscriptionFrame,
    InterimSourceTranscriptionFrame,
    NoteFrame,
    NothingToSpeakFrame,
)


class PassesPageFrames(AIService):
    """Mixed in before a ``TTSService`` subclass."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, PAGE_DATA_FRAMES):
            await AIService.process_frame(self, frame, direction)  # not the TTS's queueing
            await self.push_frame(frame, direction)
            return
        await super().process_frame(frame, direction)
