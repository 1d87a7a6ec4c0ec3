"""The local provider's text-to-speech: a Pipecat TTS service over the node's Piper (the
inference service streams each sentence's PCM as it is made).

Pipecat's ``TTSService`` does the rest: one sentence at a time, in order, each framed by
``TTSStartedFrame`` / ``TTSStoppedFrame``. What is ours: a ``SpeakTranslationFrame``'s
latency marks are completed here (``tts_start``, ``tts_first_chunk``, ``first_audio_out``)
and sent on as a ``LatencyMarksFrame``; failures become ``CallErrorFrame``s in our words;
and the page's frames are not queued behind the speech being made (``PassesPageFrames``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from dragoman.inference.client import InferenceClient, InferenceError
from dragoman.pipeline.frames import CallErrorFrame, LatencyMarksFrame, SpeakTranslationFrame
from dragoman.pipeline.tts_page_frames import PassesPageFrames


class PiperTTSService(PassesPageFrames, TTSService):
    def __init__(self, *, client: InferenceClient, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            # The speech service being restarted makes sentences fail in a row; that must
            # not write the service off for the rest of the call.
            max_consecutive_zero_audio_contexts=0,
            # Voice and model are the inference service's (per language, see languages.py).
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self._client = client
        self._upcoming: tuple[str, dict[str, float]] = ("", {})  # the sentence run_tts gets next
        self._first_out: dict[str, tuple[str, dict[str, float]]] = {}  # context → its marks

    def can_generate_metrics(self) -> bool:
        return False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, SpeakTranslationFrame):
            # After the previous sentence was made: the TTS stage speaks one at a time.
            self._upcoming = (frame.utterance_id, {**frame.marks, "tts_start": time.monotonic()})
        await super().process_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        uid, marks = self._upcoming
        self._upcoming = ("", {})
        try:
            first = True
            async for pcm, rate in self._client.tts(text):
                if first:
                    first = False
                    marks["tts_first_chunk"] = time.monotonic()
                    if uid:
                        self._first_out[context_id] = (uid, marks)
                yield TTSAudioRawFrame(
                    audio=pcm, sample_rate=rate, num_channels=1, context_id=context_id
                )
        except Exception as e:
            code = "tts_failed"
            detail = f"speech synthesis of {uid or text[:40]}: {type(e).__name__}: {e}"
            if isinstance(e, InferenceError):  # the node's speech service is being restarted
                code, detail = "inference_unavailable", f"speech synthesis of {uid}: {e}"
            yield CallErrorFrame(code=code, detail=detail, origin="local")
            if first:
                # No audio, so the base class will not close the context: close it now (its
                # TTSStoppedFrame follows) rather than after its idle timeout.
                await self.remove_audio_context(context_id)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        await super().push_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and frame.context_id in self._first_out:
            uid, marks = self._first_out.pop(frame.context_id)
            marks["first_audio_out"] = time.monotonic()
            await super().push_frame(LatencyMarksFrame(utterance_id=uid, marks=marks))
