"""In a two-party room, an agent's translated speech is for the other person: this stage,
just before the call's output, hands it to the worker (which passes it to the other
participant's agent) instead of playing it to its own caller. Inactive, it passes
everything through, so any one-way call can become a room's host mid-call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import Frame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class RoomRouter(FrameProcessor):
    def __init__(self, send: Callable[[bytes, int], None], active: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.active = active
        self._send = send  # (PCM16 mono, sample rate) → the other participant

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if (
            self.active
            and isinstance(frame, OutputAudioRawFrame)
            and direction == FrameDirection.DOWNSTREAM
        ):
            self._send(frame.audio, frame.sample_rate)
            return
        await self.push_frame(frame, direction)
