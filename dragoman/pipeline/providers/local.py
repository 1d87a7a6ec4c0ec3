"""The offline provider: Whisper (transcribe + translate to English) and Piper, both served
by the node's inference service, as a Pipecat STT and a Pipecat TTS service."""

from __future__ import annotations

from collections.abc import Sequence

from pipecat.processors.frame_processor import FrameProcessor

from dragoman.languages import LanguagePair
from dragoman.pipeline.piper_tts import PiperTTSService
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.speech_translator import WhisperSpeechTranslator
from dragoman.pipeline.whisper_stt import WhisperSTTService


class LocalInterpretation:
    def __init__(self, ctx: CallContext) -> None:
        if ctx.client is None:
            raise ValueError("the local provider needs the node's inference service")
        s = ctx.settings
        self.stt = WhisperSTTService(
            translator=WhisperSpeechTranslator(ctx.client),
            pair=ctx.pair,
            max_utterance_s=s.max_utterance_s,
            min_utterance_s=s.min_utterance_s,
            partial_interval_s=s.partial_interval_s,
        )
        self.tts = PiperTTSService(client=ctx.client)

    @property
    def stages(self) -> Sequence[FrameProcessor]:
        return (self.stt, self.tts)

    async def set_pair(self, pair: LanguagePair) -> None:
        self.stt.pair = pair  # read when an utterance ends: applies from the next one


def build(ctx: CallContext) -> LocalInterpretation:
    return LocalInterpretation(ctx)
