"""The local provider's simultaneous mode: a Pipecat STT service that interprets while the
person is still talking.

Every ``step_s`` the audio not yet cut off (the *buffer*) is transcribed again, the
committed text before it as the prompt, with word timestamps; the LocalAgreement policy
(``agreement``) commits the words two hypotheses agree on, that a pause follows, or that
have waited past ``force_after_s``. At the last committed boundary — a sentence end, a
breath-length pause between words, or, in a long sentence, a clause end
(``agreement.cut_point``) — the buffer is cut: that audio is a *unit*, which is translated
at once (Whisper's translate task on exactly that audio) and spoken while the person goes
on. A pause the VAD hears as the end of an utterance decodes the buffer one last time and
makes the rest a unit.

Why the source words lead, not the translation's (as a first version did): re-decoded
translations of a growing buffer change from step to step (Whisper base rewrites its English
as the Japanese verb arrives), so two hypotheses rarely agreed and the forced commits spoke
fragments; and English words timed against Japanese audio gave cut points inside source
sentences. Same-language timestamps are accurate, committed source text is stable, and a
whole sentence translates with its meaning.

Out go: partial source captions (committed text, then the tentative tail; ``stable`` says
how much is committed), the final source caption when a unit is cut, its translation
caption, then the translation as a ``SpeakTranslationFrame`` carrying the monotonic time its
source audio ended (``source_end``), so the voice can keep pace (``piper_tts``).

Audio frames are consumed here; VAD frames pass on. Two background tasks run the steps and
the translations, each in order, so a slow decode never blocks the audio path and the
translations are spoken in the order they were said. Inactive (the call is in consecutive
mode), the service passes every frame on untouched and only finishes what it had begun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
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
from dragoman.languages import LanguagePair, target_unavailable_reason
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
from dragoman.pipeline.providers.local.simultaneous import own_voice
from dragoman.pipeline.providers.local.simultaneous.agreement import (
    Agreement,
    CutRule,
    TimedWord,
    after_cut,
    agree,
    cut_point,
    text_of,
)
from dragoman.pipeline.providers.local.simultaneous.decoder import StreamDecoder
from dragoman.pipeline.providers.local.simultaneous.pace import PaceRule, SpeechBacklog, should_join

log = logging.getLogger(__name__)

RATE = 16000
BYTES_PER_S = RATE * 2
PREROLL_S = 0.5  # the VAD confirms speech ~0.2 s after it starts: keep what came before
MIN_DECODE_S = 0.6  # less audio than this gives Whisper nothing stable to say
MIN_UNIT_S = 0.3  # a shorter unit is a blip, not worth a translation
PAD_S = 0.3  # Whisper garbles a last word that ends abruptly
PROMPT_CHARS = 200  # whisper_streaming's prompt size: enough context, little decode cost
VOICE_KEPT_S = 30.0
SAID_PIECES_KEPT = 6  # the agent's recent pieces of speech, for the own-voice check


@dataclass
class _Unit:
    """One caption unit: the audio from one cut to the next, and its committed words."""

    uid: str
    start: float  # audio clock
    words: list[TimedWord] = field(default_factory=list)  # committed source words
    shown: bool = False  # a partial source caption went to the page


@dataclass
class _Cut:
    """A closed unit on its way to translation."""

    unit: _Unit
    end: float
    pcm: bytes


@dataclass
class _Pending:
    """Translations waiting to be spoken together while the voice is behind."""

    text: list[str] = field(default_factory=list)
    uid: str = ""
    source_end: float = 0.0
    since: float = 0.0


class SimultaneousWhisperSTT(STTService):
    def __init__(
        self,
        *,
        decoder: StreamDecoder,
        pair: LanguagePair,
        backlog: SpeechBacklog,
        step_s: float = 0.5,
        force_after_s: float = 3.0,
        cut_rule: CutRule | None = None,
        pace_rule: PaceRule | None = None,
        active: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            audio_passthrough=False,
            sample_rate=RATE,
            settings=STTSettings(model=None, language=None),
            **kwargs,
        )
        self.pair = pair
        self.active = active
        self._decoder = decoder
        self._backlog = backlog
        self._step_s = step_s
        self._force_after_s = force_after_s
        self._cut_rule = cut_rule or CutRule()
        self._pace_rule = pace_rule or PaceRule()
        # The audio clock: seconds of caller audio received, and when the last frame came.
        self._clock = 0.0
        self._clock_mono = time.monotonic()
        self._buf = bytearray()
        self._buf_start = 0.0
        self._unit: _Unit | None = None
        self._seq = 0
        self._agreement = Agreement()
        self._source_before = ""  # committed source text before the buffer (the prompt)
        self._speaking = False  # the VAD hears the caller
        self._stop_at: float | None = None  # the VAD said the utterance ended here
        self._wake = asyncio.Event()
        self._cuts: asyncio.Queue[_Cut] = asyncio.Queue()
        self._pending = _Pending()
        self._voice: deque[tuple[float, float]] = deque()  # spans the agent was heard
        self._voice_since: float | None = None
        self._said: deque[list[str]] = deque(maxlen=SAID_PIECES_KEPT)
        self._failing = False  # the inference service failed; said once until it recovers
        self._tasks: list[asyncio.Task] = []
        self.own_voice_dropped = 0  # measured: units dropped as the agent's own voice

    @property
    def supports_ttfs(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Not used: audio is buffered here and decoded by the step loop."""
        yield None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._clock_mono = time.monotonic()
        self._tasks = [
            self.create_task(self._step_loop(), "simultaneous-steps"),
            self.create_task(self._translate_loop(), "simultaneous-translations"),
        ]

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_tasks()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_tasks()
        await super().cancel(frame)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            await self.cancel_task(task)
        self._tasks.clear()

    def set_active(self, active: bool) -> None:
        """Switch mode: an utterance in progress is finished as if the speaker paused; a
        speaker already talking when it turns on is followed from the pre-roll on."""
        if self.active and not active and self._unit is not None:
            self._stop_at = self._clock
            self._wake.set()
        if active and not self.active and self._speaking and self._unit is None:
            self._open_unit(self._buf_start)
        self.active = active

    # --- frames ---------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioRawFrame) and not self.active:
            self._take(frame.audio)  # the clock and the pre-roll, for a switch back
            await self.push_frame(frame, direction)
            return
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
            if self.active and self._unit is None:
                self._open_unit(self._buf_start)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            if self._unit is not None:
                self._stop_at = self._clock
                self._wake.set()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._voice_since = self._clock
        elif isinstance(frame, BotStoppedSpeakingFrame) and self._voice_since is not None:
            self._voice.append((self._voice_since, self._clock))
            self._voice_since = None
            while self._voice and self._voice[0][1] < self._clock - VOICE_KEPT_S:
                self._voice.popleft()

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        self._take(frame.audio)

    def _take(self, pcm: bytes) -> None:
        self._clock += len(pcm) / BYTES_PER_S
        self._clock_mono = time.monotonic()
        self._buf += pcm
        if self._unit is None:  # keep only the pre-roll
            excess = len(self._buf) - int(PREROLL_S * BYTES_PER_S) // 2 * 2
            if excess > 0:
                del self._buf[:excess]
                self._buf_start += excess / BYTES_PER_S

    def _open_unit(self, start: float) -> _Unit:
        self._seq += 1
        self._unit = _Unit(f"u{self._seq}", start)
        return self._unit

    def _mono(self, t: float) -> float:
        """The monotonic time at which audio-clock time ``t`` arrived."""
        return self._clock_mono - (self._clock - t)

    # --- the step loop ----------------------------------------------------------------------
    async def _step_loop(self) -> None:
        last = 0.0
        while True:
            timeout = max(0.0, last + self._step_s - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._unit is None:
                continue
            final = self._stop_at is not None
            if not final:
                if time.monotonic() < last + self._step_s:
                    continue
                if len(self._buf) < MIN_DECODE_S * BYTES_PER_S:
                    continue
            last = time.monotonic()
            try:
                await self._step(final)
            except Exception:
                log.exception("simultaneous step failed")
                if final:
                    await self._cut(max(self._buf_start, self._stop_at or 0.0), final=True)

    async def _step(self, final: bool) -> None:
        unit = self._unit
        assert unit is not None
        end = self._stop_at if final and self._stop_at is not None else self._clock
        end = max(end, self._buf_start)
        nbytes = min(len(self._buf), int((end - self._buf_start) * RATE) * 2)
        pcm = bytes(self._buf[:nbytes])
        snap_end = self._buf_start + nbytes / BYTES_PER_S
        if final:
            pcm += bytes(int(PAD_S * BYTES_PER_S))
        prompt = self._source_before[-PROMPT_CHARS:]
        try:
            words = await self._decoder.transcribe(pcm, self.pair.source, prompt, final)
        except InferenceError as e:
            await self._inference_failed(e)
            if final:
                await self._cut(snap_end, final=True)
            return
        self._failing = False
        if words is None:  # a newer step of this call replaced this one
            return
        start = self._buf_start
        hypothesis = tuple(TimedWord(start + w.start, start + w.end, w.text) for w in words)
        step = agree(
            self._agreement,
            hypothesis,
            snap_end,
            self._force_after_s,
            final=final,
            pause_s=self._cut_rule.pause_s,
        )
        self._agreement = step.state
        unit.words.extend(step.new)
        if final:
            await self._cut(snap_end, final=True)
            return
        await self._source_caption(unit, list(step.tail), end=snap_end, final=False)
        state = self._agreement
        at = cut_point(state.committed, state.tail, self._buf_start, snap_end, self._cut_rule)
        if at is not None:
            await self._cut(at, final=False)
        elif snap_end - self._buf_start > self._cut_rule.max_buffer_s:
            # Whisper has agreed on nothing for a whole buffer (noise, music, a language it
            # cannot follow): end the unit here, as a pause would, rather than let the
            # buffer and each decode grow without bound.
            self._stop_at = snap_end
            self._wake.set()

    async def _inference_failed(self, e: InferenceError) -> None:
        log.warning("simultaneous interpretation: %s", e)
        if not self._failing:
            self._failing = True
            await self.push_frame(CallErrorFrame(code="inference_unavailable", detail=str(e)))

    async def _cut(self, at: float, final: bool) -> None:
        """Close the unit at ``at`` (audio clock): its audio goes for translation and leaves
        the buffer; the committed words after ``at`` start the next unit."""
        unit = self._unit
        assert unit is not None
        at = max(at, self._buf_start)
        unit.words, rest = (
            [w for w in unit.words if w.end <= at + 1e-6],
            [w for w in unit.words if w.end > at + 1e-6],
        )
        cut_bytes = min(len(self._buf), int((at - self._buf_start) * RATE) * 2)
        pcm = bytes(self._buf[:cut_bytes])
        del self._buf[:cut_bytes]
        self._buf_start += cut_bytes / BYTES_PER_S
        self._agreement = after_cut(self._agreement, self._buf_start)
        text = text_of(unit.words)
        if text:
            self._source_before = (self._source_before + " " + text)[-PROMPT_CHARS:]
            await self._source_caption(unit, [], end=at, final=True)
            await self.push_frame(TranslatingFrame(utterance_id=unit.uid))
            self._cuts.put_nowait(_Cut(unit, at, pcm))
        elif unit.shown:  # a partial that came to nothing (a cough) is withdrawn
            await self._source_caption(unit, [], end=at, final=True)
        if final:
            self._stop_at = None
            if self._speaking and self.active:
                self._open_unit(self._buf_start).words.extend(rest)
            else:
                self._unit = None
                self._agreement = Agreement(last_end=self._agreement.last_end)
        else:
            self._open_unit(self._buf_start).words.extend(rest)

    # --- translations ------------------------------------------------------------------------
    async def _translate_loop(self) -> None:
        while True:
            cut = await self._cuts.get()
            try:
                await self._translate(cut)
            except InferenceError as e:
                await self._inference_failed(e)
                await self.push_frame(NothingToSpeakFrame(utterance_id=cut.unit.uid))
            except Exception:
                log.exception("translating %s failed", cut.unit.uid)
                await self.push_frame(CallErrorFrame(code="translation_failed"))
                await self.push_frame(NothingToSpeakFrame(utterance_id=cut.unit.uid))

    async def _translate(self, cut: _Cut) -> None:
        unit = cut.unit
        if target_unavailable_reason(self.pair.target) is not None:
            # A room's guest speaking English to a Japanese host: shown, with the reason.
            await self.push_frame(needs_cloud_note(unit.uid, self.pair.source, self.pair.target))
            await self.push_frame(NothingToSpeakFrame(utterance_id=unit.uid))
            return
        english = ""
        if len(cut.pcm) >= MIN_UNIT_S * BYTES_PER_S:
            pcm = cut.pcm + bytes(int(PAD_S * BYTES_PER_S))
            # No prompt: with the previous translations as context, Whisper base carried
            # its mistakes into the next sentence ("fish" three sentences running) and
            # copied a previous sentence over audio it was unsure of (bench lag).
            english = (await self._decoder.translate(pcm, self.pair.source, "")).strip()
            log.debug("%s %.2f-%.2f s → %r", unit.uid, unit.start, cut.end, english)
        self._failing = False
        if english and self._is_own_voice(unit.start, cut.end, english):
            # Not spoken again. Its source caption stays: the check cannot tell the agent's
            # echo from a caller who repeats it, and a caption is cheaper to keep than words.
            self.own_voice_dropped += 1
            log.info("dropped the agent's own voice: %r", english)
            english = ""
        if not english:
            await self.push_frame(NothingToSpeakFrame(utterance_id=unit.uid))
            await self._speak(None, unit.uid, 0.0)  # what waited to be joined goes now
            return
        await self.push_frame(
            TranslationFrame(
                text=english,
                language=self.pair.target,
                utterance_id=unit.uid,
                t_start_ms=int(unit.start * 1000),
                t_end_ms=int(cut.end * 1000),
            )
        )
        await self._speak(english, unit.uid, source_end=self._mono(cut.end))

    def _is_own_voice(self, start: float, end: float, english: str) -> bool:
        voice = [*self._voice]
        if self._voice_since is not None:
            voice.append((self._voice_since, self._clock))
        return own_voice.overlaps_voice(start, end, voice) and own_voice.repeats_said(
            english.split(), list(self._said)
        )

    async def _speak(self, text: str | None, uid: str, source_end: float) -> None:
        """Send a translation to the voice — or, while the voice is behind and the next
        translation is already on its way, hold it to go out joined with that one."""
        pending = self._pending
        if text:
            if not pending.text:
                pending.uid, pending.since = uid, time.monotonic()
            pending.text.append(text)
            pending.source_end = source_end
        if not pending.text:
            return
        if should_join(self._backlog.waiting, self._pace_rule) and self._cuts.qsize() > 0:
            return
        self._pending = _Pending()
        joined = " ".join(pending.text)
        self._said.append(joined.split())
        self._backlog.pushed += 1
        marks = {
            "source_end": pending.source_end,
            "translated": time.monotonic(),
            "first_pending": pending.since,
        }
        await self.push_frame(
            SpeakTranslationFrame(text=joined, utterance_id=pending.uid, marks=marks)
        )

    async def _source_caption(
        self, unit: _Unit, tail: list[TimedWord], end: float, final: bool
    ) -> None:
        committed = text_of(unit.words)
        times = {"t_start_ms": int(unit.start * 1000), "t_end_ms": int(end * 1000)}
        ids = {"user_id": "", "timestamp": "", "language": self.pair.source}
        if final:
            frame: Frame = SourceTranscriptionFrame(
                text=committed, utterance_id=unit.uid, **ids, **times
            )
        else:
            text = "".join(w.text for w in (*unit.words, *tail)).strip()
            if not text:
                return
            unit.shown = True
            stable = len(committed) if text.startswith(committed) else 0
            frame = InterimSourceTranscriptionFrame(
                text=text, utterance_id=unit.uid, stable=stable, **ids, **times
            )
        await self.push_frame(frame)
