"""Ways to talk: push-to-talk and "interpret now", for every provider that cuts utterances on
our VAD's frames (the local one in both modes, openai-cascade).

Two processors share the call's state:

- ``MicGate``, before the VAD: with push-to-talk on and the button not held, the caller's
  audio is replaced by silence. (Silence, not nothing: the VAD ends the speech it heard the
  usual way instead of being left mid-word, and the simultaneous stage's audio clock keeps
  time with the call.)
- ``UtteranceCutter``, just before the provider stages: passes the VAD's start/stop frames
  through, and ends an utterance *now* when asked — on a release, or on "interpret now" —
  by sending the provider the stop a pause would have sent (and, when the speaker goes on,
  a start for the next utterance). The VAD's own stop for speech already cut is swallowed,
  so the provider sees each start paired with one stop, as always.

The session's control messages enter as ``TalkFrame`` / ``InterpretNowFrame`` at the mic
gate and travel with the audio, so each takes effect exactly between the frames it arrived
between; the cutter consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    SystemFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


@dataclass
class TalkFrame(SystemFrame):
    """Push-to-talk on or off, and whether its button is held."""

    push_to_talk: bool = False
    held: bool = False


@dataclass
class InterpretNowFrame(SystemFrame):
    """End the utterance under way now."""


@dataclass(frozen=True)
class CutterState:
    push_to_talk: bool = False
    held: bool = False
    vad_speaking: bool = False  # what the VAD (after the turn and echo gates) says
    open: bool = False  # a start went to the provider, its stop has not

    @property
    def hearing(self) -> bool:
        return self.held or not self.push_to_talk


# What the cutter sends the provider for each event: the frames, and its state after.
Step = tuple[list[type[Frame]], CutterState]


def on_vad(state: CutterState, started: bool) -> Step:
    """The VAD's own start or stop."""
    s = CutterState(state.push_to_talk, state.held, started, state.open)
    if started and not s.open and s.hearing:
        return [VADUserStartedSpeakingFrame], _with(s, open=True)
    if not started and s.open:
        return [VADUserStoppedSpeakingFrame], _with(s, open=False)
    return [], s  # already cut, or speech the mic gate silenced


def on_talk(state: CutterState, push_to_talk: bool, held: bool) -> Step:
    """Push-to-talk switched, or its button pressed or released."""
    s = _with(state, push_to_talk=push_to_talk, held=held and push_to_talk)
    if s.push_to_talk and s.held and not s.open:
        # Pressed: the utterance is the hold, from its first moment (the VAD may well still
        # be in the speech of the last hold, and would send no start).
        return [VADUserStartedSpeakingFrame], _with(s, open=True)
    if not s.hearing and s.open:  # released: interpret at once
        return [VADUserStoppedSpeakingFrame], _with(s, open=False)
    if not push_to_talk and s.vad_speaking and not s.open:
        return [VADUserStartedSpeakingFrame], _with(s, open=True)  # listening again, mid-word
    return [], s


def on_interpret_now(state: CutterState) -> Step:
    if not state.open:
        return [], state
    frames: list[type[Frame]] = [VADUserStoppedSpeakingFrame]
    goes_on = state.held if state.push_to_talk else state.vad_speaking
    if goes_on:
        frames.append(VADUserStartedSpeakingFrame)
    return frames, _with(state, open=goes_on)


def _with(state: CutterState, **changes: bool) -> CutterState:
    fields = {
        "push_to_talk": state.push_to_talk,
        "held": state.held,
        "vad_speaking": state.vad_speaking,
        "open": state.open,
    }
    fields.update(changes)
    return CutterState(**fields)


class MicGate(FrameProcessor):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.push_to_talk = False
        self.held = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TalkFrame):
            self.push_to_talk, self.held = frame.push_to_talk, frame.held
        elif (
            isinstance(frame, InputAudioRawFrame)
            and self.push_to_talk
            and not self.held
            and direction == FrameDirection.DOWNSTREAM
        ):
            frame = InputAudioRawFrame(
                audio=bytes(len(frame.audio)),
                sample_rate=frame.sample_rate,
                num_channels=frame.num_channels,
            )
        await self.push_frame(frame, direction)


class UtteranceCutter(FrameProcessor):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = CutterState()
        self.cuts = 0  # utterances ended by a release or "interpret now" (measured)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._apply(on_vad(self.state, True), frame)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._apply(on_vad(self.state, False), frame)
        elif isinstance(frame, TalkFrame):
            await self._apply(on_talk(self.state, frame.push_to_talk, frame.held))
        elif isinstance(frame, InterpretNowFrame):
            await self._apply(on_interpret_now(self.state))
        else:
            await self.push_frame(frame, direction)

    async def _apply(self, step: Step, original: Frame | None = None) -> None:
        kinds, self.state = step
        for kind in kinds:
            if original is not None and isinstance(original, kind):
                await self.push_frame(original)  # the VAD's own, with its timings
            else:
                if kind is VADUserStoppedSpeakingFrame and original is None:
                    self.cuts += 1
                await self.push_frame(kind())


class Talk:
    """The call's push-to-talk state and its two processors."""

    def __init__(self) -> None:
        self.mic = MicGate()
        self.cutter = UtteranceCutter()
        self.push_to_talk = False
        self.held = False

    async def set(self, push_to_talk: bool, held: bool) -> None:
        self.push_to_talk, self.held = push_to_talk, held and push_to_talk
        await self.mic.queue_frame(TalkFrame(push_to_talk=self.push_to_talk, held=self.held))

    async def interpret_now(self) -> None:
        await self.mic.queue_frame(InterpretNowFrame())
