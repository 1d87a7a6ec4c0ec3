"""Conversation mode for providers that transcribe with a given language (openai-cascade):
which of the pair's two languages each utterance is in, told before it is transcribed.

Sits between the VAD and the speech-to-text service. It keeps the utterance's audio; when the
VAD says the speaker stopped, it asks the node's inference service (Whisper's language head,
restricted to the pair — free, local and ~0.1 s) and, before letting the stop frame on,
hands the result to ``on_language``: the STT's language for this utterance and the
translator's direction. A call, not a frame: the VAD's stop is a system frame, which
overtakes queued control frames such as ``STTUpdateSettingsFrame`` (measured: the STT
then transcribed an English sentence as Japanese).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from dragoman.inference.client import InferenceClient, InferenceError
from dragoman.languages import LanguagePair

log = logging.getLogger(__name__)

PREROLL_BYTES = 16000 * 2 // 2  # 0.5 s at 16 kHz: the VAD confirms speech late
MAX_BYTES = 16000 * 2 * 30  # Whisper's window


class LanguageIdentifier(FrameProcessor):
    def __init__(
        self,
        client: InferenceClient,
        pair: LanguagePair,
        on_language: Callable[[str], Awaitable[None]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pair = pair
        self._client = client
        self._on_language = on_language
        self._audio = bytearray()
        self._speaking = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._audio += frame.audio
            limit = MAX_BYTES if self._speaking else PREROLL_BYTES
            if len(self._audio) > limit:
                del self._audio[: len(self._audio) - limit]
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._speaking:
            self._speaking = False
            pcm, pair = bytes(self._audio), self.pair
            self._audio.clear()
            try:
                spoken = await self._client.identify(pcm, [pair.source, pair.target])
            except InferenceError as e:
                # The node's speech service is restarting: transcribe as the pair's first
                # language rather than lose the sentence.
                log.warning("language identification failed: %s", e)
                spoken = pair.source
            await self._on_language(spoken)
        await self.push_frame(frame, direction)
