"""In a two-party room, an agent's translated speech is for the other person: this stage,
just before the call's output, hands it to the worker (which passes it to the other
participant's agent) instead of playing it to its own caller. Inactive, it passes
everything through, so any one-way call can become a room's host mid-call.

Its own caller's page still follows the interpreter's state: "speaking" comes as usual, and
since no audio plays here to end it, a ``ForwardedSpeechPlayedFrame`` goes upstream (to
``PageMessages``) once the forwarded speech has had time to play on the other side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import CancelFrame, EndFrame, Frame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from dragoman.pipeline.frames import ForwardedSpeechPlayedFrame

PIECE_BYTES = 9600  # 200 ms of 24 kHz PCM16: small next to a pipe's 64 KB buffer


class RoomRouter(FrameProcessor):
    def __init__(
        self,
        send: Callable[[bytes, int], None],
        active: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.active = active
        self._send = send  # (PCM16 mono, sample rate) → the other participant
        self._playing_until = 0.0  # when the speech forwarded so far has finished playing
        self._quiet_task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if (
            self.active
            and isinstance(frame, OutputAudioRawFrame)
            and direction == FrameDirection.DOWNSTREAM
        ):
            # In pieces: the pipes between agents and worker block on a full buffer, and a
            # sentence of speech in one message (~150 KB) would stall both event loops.
            for i in range(0, len(frame.audio), PIECE_BYTES):
                self._send(frame.audio[i : i + PIECE_BYTES], frame.sample_rate)
            seconds = len(frame.audio) / 2 / frame.sample_rate
            self._playing_until = max(self._playing_until, time.monotonic()) + seconds
            if self._quiet_task is None:
                self._quiet_task = self.create_task(self._until_quiet(), "room-quiet")
            return
        if isinstance(frame, (EndFrame, CancelFrame)) and self._quiet_task is not None:
            await self.cancel_task(self._quiet_task)
            self._quiet_task = None
        await self.push_frame(frame, direction)

    async def _until_quiet(self) -> None:
        while (left := self._playing_until - time.monotonic()) > 0:
            await asyncio.sleep(left)
        self._quiet_task = None
        await self.push_frame(ForwardedSpeechPlayedFrame(), FrameDirection.UPSTREAM)
