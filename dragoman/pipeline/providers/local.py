"""The offline provider: Whisper (transcribe + translate to English) and Piper, both served
by the node's inference service."""

from __future__ import annotations

from collections.abc import Sequence

from pipecat.processors.frame_processor import FrameProcessor

from dragoman.languages import LanguagePair
from dragoman.pipeline.interpreter import Interpreter
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.speaker import Speaker
from dragoman.pipeline.translator import WhisperTranslator


class LocalInterpretation:
    def __init__(self, ctx: CallContext) -> None:
        if ctx.client is None:
            raise ValueError("the local provider needs the node's inference service")
        s = ctx.settings
        self.interpreter = Interpreter(
            translator=WhisperTranslator(ctx.client),
            pair=ctx.pair,
            notify=ctx.notify,
            max_utterance_s=s.max_utterance_s,
            min_utterance_s=s.min_utterance_s,
            partial_interval_s=s.partial_interval_s,
        )
        self.speaker = Speaker(client=ctx.client, notify=ctx.notify)

    @property
    def stages(self) -> Sequence[FrameProcessor]:
        return (self.interpreter, self.speaker)

    async def set_pair(self, pair: LanguagePair) -> None:
        self.interpreter.pair = pair  # read when an utterance ends: applies from the next one


def build(ctx: CallContext) -> LocalInterpretation:
    return LocalInterpretation(ctx)
