"""Notes when the caller's audio last arrived, for the no-media limit (any provider)."""

from __future__ import annotations

import time

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class MediaWatch(FrameProcessor):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.last_media_at: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.last_media_at = time.monotonic()
        await self.push_frame(frame, direction)
