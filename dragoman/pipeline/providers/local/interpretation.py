"""The offline provider: Whisper (transcribe + translate to English) and Piper, both served
by the node's inference service, as Pipecat STT services and a Pipecat TTS service.

Both modes are built for every call and one is active: consecutive (``WhisperSTTService``,
an utterance translated once the speaker pauses) or simultaneous
(``SimultaneousWhisperSTT``, committed words spoken while the speaker talks). The inactive
one passes frames on untouched, so the mode is switched mid-call without a new pipeline."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from pipecat.processors.frame_processor import FrameProcessor

from dragoman.languages import LanguagePair
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.providers.local.piper_tts import PiperTTSService
from dragoman.pipeline.providers.local.simultaneous.agreement import CutRule
from dragoman.pipeline.providers.local.simultaneous.decoder import WhisperStreamDecoder
from dragoman.pipeline.providers.local.simultaneous.pace import PaceRule, SpeechBacklog
from dragoman.pipeline.providers.local.simultaneous.stt_service import SimultaneousWhisperSTT
from dragoman.pipeline.providers.local.speech_translator import WhisperSpeechTranslator
from dragoman.pipeline.providers.local.whisper_stt import WhisperSTTService

SIMULTANEOUS = "simultaneous"


class LocalInterpretation:
    def __init__(self, ctx: CallContext) -> None:
        if ctx.client is None:
            raise ValueError("the local provider needs the node's inference service")
        s = ctx.settings
        simultaneous = ctx.interpretation == SIMULTANEOUS
        self.stt = WhisperSTTService(
            translator=WhisperSpeechTranslator(ctx.client),
            pair=ctx.pair,
            max_utterance_s=s.max_utterance_s,
            min_utterance_s=s.min_utterance_s,
            partial_interval_s=s.partial_interval_s,
        )
        self.stt.active = not simultaneous
        backlog = SpeechBacklog()
        pace = PaceRule(
            relaxed_lag_s=s.pace_relaxed_lag_s,
            max_speed=s.pace_max_speed,
            join_backlog=s.pace_join_backlog,
        )
        self.simultaneous = SimultaneousWhisperSTT(
            # Unique per call on the node (agents forked alike could share an id()).
            decoder=WhisperStreamDecoder(ctx.client, stream_id=uuid.uuid4().hex[:12]),
            pair=ctx.pair,
            backlog=backlog,
            step_s=s.simultaneous_step_s,
            force_after_s=s.simultaneous_force_after_s,
            cut_rule=CutRule(
                pause_s=s.simultaneous_pause_s,
                clause_after_s=s.simultaneous_clause_after_s,
                max_buffer_s=s.simultaneous_max_buffer_s,
            ),
            pace_rule=pace,
            active=simultaneous,
        )
        self.tts = PiperTTSService(client=ctx.client, backlog=backlog, pace=pace)
        self.interpretation = ctx.interpretation

    @property
    def stages(self) -> Sequence[FrameProcessor]:
        return (self.stt, self.simultaneous, self.tts)

    async def set_pair(self, pair: LanguagePair) -> None:
        # Read when an utterance ends (consecutive) or at each step (simultaneous).
        self.stt.pair = pair
        self.simultaneous.pair = pair

    async def set_interpretation(self, mode: str) -> None:
        if mode == self.interpretation:
            return
        self.interpretation = mode
        self.simultaneous.set_active(mode == SIMULTANEOUS)
        await self.stt.set_active(mode != SIMULTANEOUS)


def build(ctx: CallContext) -> LocalInterpretation:
    return LocalInterpretation(ctx)
