"""The one place a call's frames become the page's messages: captions of both sides, the
interpreter's state, notes, latency marks and failures, sent through the session's channel
to the worker (``send``). It sits after the provider stages, before the room router and the
output, so every provider reports the same way:

- ``InterimSourceTranscriptionFrame`` / ``SourceTranscriptionFrame`` → source caption,
  ``TranslationFrame`` → translation caption, ``NoteFrame`` → note,
  ``LatencyMarksFrame`` → metrics, ``CallErrorFrame`` → error (and the call's end when it
  says so);
- state: ``TranslatingFrame`` → "translating"; the first translated audio after a
  ``TTSStartedFrame`` → "speaking"; "listening" once the speech is over — its TTS context
  stopped and the output quiet (``BotStoppedSpeakingFrame`` from the transport, or the room
  router's ``ForwardedSpeechPlayedFrame`` when it went to the other person) — or at once after a
  ``NothingToSpeakFrame``.

The frames it turns into messages end here, and so do transcriptions (a service's raw ones
are re-sent by their provider with an utterance id); speech and everything else pass on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    Frame,
    InterimTranscriptionFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from dragoman.contract import page
from dragoman.pipeline.frames import (
    CallErrorFrame,
    ForwardedSpeechPlayedFrame,
    InterimSourceTranscriptionFrame,
    LatencyMarksFrame,
    NoteFrame,
    NothingToSpeakFrame,
    SourceTranscriptionFrame,
    TranslatingFrame,
    TranslationFrame,
)


class PageMessages(FrameProcessor):
    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        end_call: Callable[[str], Awaitable[None]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._send = send
        self._end_call = end_call
        self._tts_open = False  # between a TTSStartedFrame and its TTSStoppedFrame
        self._announce = False  # a TTS context started: "speaking" at its first audio
        self._audible = False  # speech went out; the output has not said it is quiet since

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, SourceTranscriptionFrame):
            self._caption(frame, "source", True)
        elif isinstance(frame, InterimSourceTranscriptionFrame):
            self._caption(frame, "source", False, frame.stable)
        elif isinstance(frame, TranslationFrame):
            self._caption(frame, "translation", frame.final, frame.stable)
        elif isinstance(frame, TranslatingFrame):
            self._send(page.state("translating"))
        elif isinstance(frame, NothingToSpeakFrame):
            self._send(page.state("listening"))
        elif isinstance(frame, NoteFrame):
            self._send(page.note(frame.utterance_id, frame.code, frame.message))
        elif isinstance(frame, LatencyMarksFrame):
            self._send(page.metrics(frame.utterance_id, frame.marks))
        elif isinstance(frame, CallErrorFrame):
            self._send(page.failure(frame.code, frame.detail, frame.fatal, frame.origin))
            if frame.end_reason is not None:
                await self._end_call(frame.end_reason)
        elif isinstance(frame, ForwardedSpeechPlayedFrame):
            self._quiet()
        elif isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            pass  # a service's raw transcript: its provider re-sends it with an utterance id
        else:
            self._on_speech(frame, direction)
            await self.push_frame(frame, direction)

    def _on_speech(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TTSStartedFrame):
            self._tts_open = self._announce = True
        elif isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._audible = True
            if self._announce:
                self._announce = False
                self._send(page.state("speaking"))
        elif isinstance(frame, TTSStoppedFrame):
            self._tts_open = self._announce = False
            if not self._audible:
                self._send(page.state("listening"))
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._quiet()

    def _quiet(self) -> None:
        """The speech that went out has finished playing."""
        was_audible, self._audible = self._audible, False
        if was_audible and not self._tts_open:
            self._send(page.state("listening"))

    def _caption(
        self,
        frame: SourceTranscriptionFrame | InterimSourceTranscriptionFrame | TranslationFrame,
        side: page.Side,
        final: bool,
        stable: int | None = None,
    ) -> None:
        lang, times = str(frame.language), (frame.t_start_ms, frame.t_end_ms)
        self._send(page.caption(frame.utterance_id, side, lang, frame.text, final, *times, stable))
