"""Conversation mode's echo guard: the agent never interprets its own voice.

One device serves two people, so its speaker plays each translation into the room and its
microphone hears it. The page keeps the browser's echo cancellation on, but a room, a
laptop speaker or a phone on a table leak enough for the VAD to fire. Between the VAD and
the provider, this processor closes the input while the agent speaks and for ``tail_s``
after (reverberation, the canceller settling): no speech start gets through, and the audio
is dropped so none of the agent's voice ends up in the next sentence's pre-roll. A person
already speaking when the agent starts is never cut (half-duplex only at a sentence's
start); one who speaks on through the end of the agent's voice gets a start at the moment
the gate opens, since the VAD, having heard both, sends no second one.
"""

from __future__ import annotations

import time
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

ECHO_TAIL_S = 0.4


class EchoGate(FrameProcessor):
    def __init__(self, tail_s: float = ECHO_TAIL_S, enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Off for a one-way call (one person, whose browser cancels the echo); on once it
        # becomes a room, where each device also plays the other person's voice.
        self.enabled = enabled
        self._tail_s = tail_s
        self._agent_speaking = False
        self._agent_quiet_at = 0.0
        self._vad_speaking = False
        self._in_utterance = False  # a start went downstream, its stop has not yet
        self.ignored_starts = 0  # speech starts swallowed while the agent spoke (measured)

    def _closed(self) -> bool:
        if not self.enabled:
            return False
        return self._agent_speaking or time.monotonic() - self._agent_quiet_at < self._tail_s

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._agent_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._agent_speaking = False
            self._agent_quiet_at = time.monotonic()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_speaking = True
            if self._closed() and not self._in_utterance:
                self.ignored_starts += 1
                return
            self._in_utterance = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            if not self._in_utterance:
                return  # the end of a start that was swallowed
            self._in_utterance = False
        elif isinstance(frame, InputAudioRawFrame) and not self._in_utterance:
            if self._closed():
                return
            if self._vad_speaking:
                self._in_utterance = True
                await self.push_frame(VADUserStartedSpeakingFrame(), direction)
        await self.push_frame(frame, direction)
