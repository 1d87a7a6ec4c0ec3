"""The local provider's text-to-speech: a Pipecat TTS service over the node's Piper (the
inference service streams each sentence's PCM as it is made).

Pipecat's ``TTSService`` does the rest: one sentence at a time, in order, each framed by
``TTSStartedFrame`` / ``TTSStoppedFrame``. What is ours: a ``SpeakTranslationFrame``'s
latency marks are completed here (``tts_start``, ``tts_first_chunk``, ``first_audio_out``)
and sent on as a ``LatencyMarksFrame``; failures become ``CallErrorFrame``s in our words;
and the page's frames are not queued behind the speech being made (``PassesPageFrames``).

Keeping pace (simultaneous mode): a piece's marks carry when its source audio ended
(``source_end``). Its lag — the time until its voice would start, counting the speech still
queued for the caller — sets Piper's speed (``pieces.speed_for``), so a fast talker is not
left further and further behind; the pieces the voice has taken are counted in the
``SpeechBacklog`` the STT stage reads to join waiting pieces.
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
from dragoman.pipeline.providers.local.simultaneous.pace import PaceRule, SpeechBacklog, speed_for
from dragoman.pipeline.tts_page_frames import PassesPageFrames


class PiperTTSService(PassesPageFrames, TTSService):
    def __init__(
        self,
        *,
        client: InferenceClient,
        backlog: SpeechBacklog | None = None,
        pace: PaceRule | None = None,
        **kwargs: Any,
    ) -> None:
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
        self._backlog = backlog
        self._pace = pace or PaceRule()
        self._play_until = 0.0  # monotonic time the speech sent so far ends playing
        self._speed = 1.0  # for the sentence run_tts gets next
        self._upcoming: tuple[str, dict[str, float]] = ("", {})  # the sentence run_tts gets next
        self._first_out: dict[str, tuple[str, dict[str, float]]] = {}  # context → its marks

    def can_generate_metrics(self) -> bool:
        return False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, SpeakTranslationFrame):
            # After the previous sentence was made: the TTS stage speaks one at a time.
            now = time.monotonic()
            marks = {**frame.marks, "tts_start": now}
            self._speed = 1.0
            if "source_end" in marks:
                if self._backlog is not None:
                    self._backlog.started += 1
                lag = max(now, self._play_until) - marks["source_end"]
                self._speed = speed_for(lag, self._pace)
            self._upcoming = (frame.utterance_id, marks)
        await super().process_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        uid, marks = self._upcoming
        self._upcoming = ("", {})
        try:
            first = True
            speed, self._speed = self._speed, 1.0
            chunks = self._client.tts(text, speed=speed) if speed != 1.0 else self._client.tts(text)
            async for pcm, rate in chunks:
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
        if isinstance(frame, TTSAudioRawFrame):
            # The output plays in real time: this chunk ends after what was queued before it.
            seconds = len(frame.audio) / 2 / frame.sample_rate
            self._play_until = max(time.monotonic(), self._play_until) + seconds
        if isinstance(frame, TTSAudioRawFrame) and frame.context_id in self._first_out:
            uid, marks = self._first_out.pop(frame.context_id)
            marks["first_audio_out"] = time.monotonic()
            await super().push_frame(LatencyMarksFrame(utterance_id=uid, marks=marks))
