"""The local provider's speech-to-text: a Pipecat STT service that cuts the caller's audio
into utterances with the VAD and has the node's Whisper transcribe and translate each one.

Pipecat's ``SegmentedSTTService`` sends one segment to one transcription; an interpreter
needs more per utterance: a pre-roll (the VAD confirms speech late), a cut for long
monologues, no blips, partial captions while it lasts, the language identified within a
conversation's pair, and a transcription and a translation sharing one Whisper encoding.
So the segmenting is ours, on top of ``STTService``.

Out go Pipecat's transcription frames (partial and final source captions, with utterance id
and language), then ``TranslationFrame`` and ``SpeakTranslationFrame`` (the caption before
the speech), ``TranslatingFrame`` / ``NothingToSpeakFrame`` for the state, ``NoteFrame``
for what is not translated, ``CallErrorFrame`` for failures.

Audio frames are consumed here. Utterances are finalised in order by one background task,
so a slow transcription never blocks the audio path and the translations are spoken in the
order they were said. The language pair is read when an utterance ends, so a switch applies
from the next sentence on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService

from dragoman.inference.client import InferenceError
from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import (
    CallErrorFrame,
    InterimSourceTranscriptionFrame,
    NothingToSpeakFrame,
    SourceTranscriptionFrame,
    SpeakTranslationFrame,
    TranslatingFrame,
    TranslationFrame,
    needs_cloud_note,
)
from dragoman.pipeline.providers.local.speech_translator import SpeechTranslator

log = logging.getLogger(__name__)

RATE = 16000
BYTES_PER_S = RATE * 2
PREROLL_S = 0.5  # VAD confirms speech ~0.2 s after it starts; keep what came before
TRAILING_SILENCE_S = 0.3  # Whisper garbles a last word that ends abruptly


@dataclass
class _Utterance:
    uid: str
    pcm: bytearray
    t_start_ms: int
    t_end_ms: int = 0
    partial_busy: bool = False
    partial_text: str = ""  # the last partial caption sent (the page shows it)
    vad_stop_at: float = 0.0  # time.monotonic() when the VAD said the speaker stopped


class WhisperSTTService(STTService):
    def __init__(
        self,
        *,
        translator: SpeechTranslator,
        pair: LanguagePair,
        max_utterance_s: float,
        min_utterance_s: float,
        partial_interval_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            audio_passthrough=False,
            sample_rate=RATE,
            # The language is per utterance (``pair``), the model the inference service's.
            settings=STTSettings(model=None, language=None),
            **kwargs,
        )
        self.pair = pair
        self._translator = translator
        self._max_bytes = int(max_utterance_s * BYTES_PER_S)
        self._min_bytes = int(min_utterance_s * BYTES_PER_S)
        self._partial_interval_s = partial_interval_s
        self._preroll = bytearray()
        self._current: _Utterance | None = None
        self._seq = 0
        self._t0 = time.monotonic()
        self._finals: asyncio.Queue[tuple[_Utterance, LanguagePair]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        # Off while the call is in simultaneous mode: every frame passes on untouched.
        self.active = True
        self._vad_speaking = False

    def _now_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    @property
    def supports_ttfs(self) -> bool:
        return False  # no turn-taking strategy downstream waits on it

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Not used: audio is segmented here (``process_audio_frame``) and each utterance
        finalised whole, not transcribed chunk by chunk."""
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
        if not self.active and isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)  # the simultaneous stage's, not ours
            return
        await super().process_frame(frame, direction)  # lifecycle frames start our tasks
        if not self.active:
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._start_utterance()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._end_utterance()

    async def set_active(self, active: bool) -> None:
        """Switch mode mid-call: an utterance in progress is translated as if the speaker
        paused; a speaker already talking when it turns on starts one now (the VAD will send
        no second start)."""
        if not active and self.active:
            await self._end_utterance()
        self.active = active
        if active and self._vad_speaking:
            self._start_utterance()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._t0 = time.monotonic()
        self._tasks.append(self.create_task(self._finalise_loop(), "finalise"))
        if self._partial_interval_s > 0:
            self._tasks.append(self.create_task(self._partial_loop(), "partials"))

    async def stop(self, frame: EndFrame) -> None:
        await self._cancel_tasks()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._cancel_tasks()
        await super().cancel(frame)

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks.clear()

    # --- segmentation --------------------------------------------------------------------
    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        pcm = frame.audio
        if self._current is None:
            self._preroll += pcm
            excess = len(self._preroll) - int(PREROLL_S * BYTES_PER_S)
            if excess > 0:
                del self._preroll[:excess]
            return
        self._current.pcm += pcm
        if len(self._current.pcm) >= self._max_bytes:
            # A long monologue is cut so the caller hears it in pieces, not after a minute.
            await self._end_utterance()
            self._start_utterance()

    def _start_utterance(self) -> None:
        if self._current is not None:
            return
        self._seq += 1
        start_ms = max(0, self._now_ms() - int(len(self._preroll) / BYTES_PER_S * 1000))
        self._current = _Utterance(f"u{self._seq}", bytearray(self._preroll), start_ms)
        self._preroll.clear()

    async def _end_utterance(self) -> None:
        utt, self._current = self._current, None
        if utt is None:
            return
        utt.t_end_ms = self._now_ms()
        utt.vad_stop_at = time.monotonic()
        if len(utt.pcm) < self._min_bytes:
            if utt.partial_text:  # withdraw the partial caption of a too-short blip
                await self._source(utt, self.pair.source, "")
            return
        await self.push_frame(TranslatingFrame(utterance_id=utt.uid))
        self._finals.put_nowait((utt, self.pair))

    async def _source(self, utt: _Utterance, lang: str, text: str, final: bool = True) -> None:
        end = utt.t_end_ms or self._now_ms()
        kind = SourceTranscriptionFrame if final else InterimSourceTranscriptionFrame
        await self.push_frame(
            kind(
                text=text,
                user_id="",
                timestamp="",
                language=lang,  # type: ignore[arg-type]  (our code, not Pipecat's enum)
                utterance_id=utt.uid,
                t_start_ms=utt.t_start_ms,
                t_end_ms=end,
            )
        )

    # --- background work -----------------------------------------------------------------
    async def _partial_loop(self) -> None:
        while True:
            await asyncio.sleep(self._partial_interval_s)
            utt = self._current
            if utt is None or utt.partial_busy or len(utt.pcm) < BYTES_PER_S * 0.8:
                continue
            utt.partial_busy = True
            pcm, pair, lang = bytes(utt.pcm), self.pair, self.pair.source
            try:
                if pair.conversation:
                    lang = await self._translator.identify(pcm, [pair.source, pair.target])
                text = await self._translator.transcribe(pcm, lang)
            except Exception as e:  # partials are a nicety; the final caption still comes
                log.warning("partial transcription failed: %s", e)
                text = ""
            finally:
                utt.partial_busy = False
            if text and self._current is utt:
                utt.partial_text = text
                await self._source(utt, lang, text, final=False)

    async def _finalise_loop(self) -> None:
        while True:
            utt, pair = await self._finals.get()
            try:
                await self._finalise(utt, pair)
            except InferenceError as e:
                # The node's speech service is down (it is being restarted): expected, and
                # the page is told to repeat itself rather than left in silence.
                log.warning("utterance %s: %s", utt.uid, e)
                await self._failed(utt, "inference_unavailable")
            except Exception:
                # The traceback is logged here; the page gets our sentence, not the exception.
                log.exception("utterance %s failed", utt.uid)
                await self._failed(utt, "translation_failed")

    async def _failed(self, utt: _Utterance, code: str) -> None:
        await self.push_frame(CallErrorFrame(code=code))
        await self.push_frame(NothingToSpeakFrame(utterance_id=utt.uid))

    async def _finalise(self, utt: _Utterance, pair: LanguagePair) -> None:
        pcm = bytes(utt.pcm) + bytes(int(TRAILING_SILENCE_S * BYTES_PER_S))
        marks = {"vad_stop": utt.vad_stop_at, "finalise": time.monotonic()}
        spoken, into = pair.source, pair.target
        if pair.conversation:
            # Which of the two people spoke: the language is identified within the pair
            # (one encoder pass, reused by the decodes below); the other one is the target.
            spoken = await self._translator.identify(pcm, [pair.source, pair.target])
            into = pair.other(spoken)
            marks["identified"] = time.monotonic()
        # Both decodes share one Whisper encoding (see inference.engines); the translation
        # is spoken as soon as it is ready, the source caption follows when it is.
        source_task = asyncio.ensure_future(self._translator.transcribe(pcm, spoken))
        translation = ""
        speakable = self._translator.speaks(into)
        if speakable:
            try:
                translated = await self._translator.translate(pcm, LanguagePair(spoken, into))
            except BaseException:
                # Its sibling fails the same way (same service): collect it, or asyncio logs
                # "Task exception was never retrieved".
                source_task.cancel()
                await asyncio.gather(source_task, return_exceptions=True)
                raise
            translation = translated.strip()
            marks["translated"] = time.monotonic()
            if translation:
                # Its caption first: on the page (or the other person's, in a room) the words
                # never come after the voice saying them; the source caption follows.
                await self.push_frame(
                    TranslationFrame(
                        text=translation,
                        language=into,
                        utterance_id=utt.uid,
                        t_start_ms=utt.t_start_ms,
                        t_end_ms=utt.t_end_ms,
                    )
                )
                # The source caption, when already there, goes ahead of the speech (which
                # holds the TTS stage while it is made).
                early = source_task.done() and source_task.exception() is None
                if early:
                    await self._source(utt, spoken, _kept(source_task.result(), utt))
                await self.push_frame(
                    SpeakTranslationFrame(text=translation, utterance_id=utt.uid, marks=marks)
                )
                if early:
                    return
        source = (await source_task).strip()
        if not source and not translation:
            if utt.partial_text:  # it came to nothing: withdraw its partial caption
                await self._source(utt, spoken, "")
            await self.push_frame(NothingToSpeakFrame(utterance_id=utt.uid))
            return
        await self._source(utt, spoken, _kept(source, utt))
        if translation:
            return
        if not speakable:
            await self.push_frame(needs_cloud_note(utt.uid, spoken, into))
        await self.push_frame(NothingToSpeakFrame(utterance_id=utt.uid))


def _kept(source: str, utt: _Utterance) -> str:
    """The final source caption of an utterance that came to something: its transcription,
    or, when the hallucination filter emptied that but the translation did not (Whisper is
    unsure when told the wrong source language), the last partial's text. A final caption
    never erases what the page showed of a sentence that was translated."""
    return source.strip() or utt.partial_text
