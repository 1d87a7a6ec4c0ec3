"""``openai-cascade`` in simultaneous mode: interpret while the person is still talking.

    [VAD] → ProviderErrors → AudioTap → (turn-by-turn STT → TextTranslator) → Simultaneous
          → CascadeTTSService

In simultaneous mode ``AudioTap`` diverts the caller's audio from the turn-by-turn STT to
``Simultaneous``, which streams it (resampled to 24 kHz) into a realtime transcription
session (``cascade_stream``); our VAD's end of speech commits the session's audio, closing
one transcription item. As the deltas come, ``cascade_policy`` commits stable pieces (a
clause or sentence boundary, N words, or a time bound); each piece is translated in order by
the LLM, which is given the previous pieces and its own translations of them as the
conversation so far (so it continues instead of restarting), and the translations are sent
for speech in order, paced: the next piece goes when the speech queued ahead runs low, a
growing backlog is spoken faster (TTS ``speed``) and, past a higher bound, waiting pieces
are joined into one request.

Captions: the source line of an item grows as partials (final at ``.completed``); its
translation line, under the same id, grows piece by piece (each piece, once translated,
never changes) and is final with the item's last piece.

Consecutive mode (``set_interpretation``) closes the session after its last item has been
transcribed and lets the audio reach the turn-by-turn STT again; simultaneous reopens one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from openai import APIError, AsyncOpenAI, AuthenticationError, PermissionDeniedError
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TTSUpdateSettingsFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.tts import OpenAITTSService

from dragoman.contract import page
from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import (
    CallErrorFrame,
    InterimSourceTranscriptionFrame,
    NothingToSpeakFrame,
    SourceTranscriptionFrame,
    SpeakTranslationFrame,
    TranslatingFrame,
    TranslationFrame,
)
from dragoman.pipeline.providers.base import CallContext, ProviderError
from dragoman.pipeline.providers.cascade_policy import (
    CommitPolicy,
    ItemText,
    PacePolicy,
    SpeechClock,
    backlog_s,
    pace_for,
)
from dragoman.pipeline.providers.cascade_stream import (
    BENIGN_CODES,
    RATE,
    StreamEvent,
    TranscriptionConnection,
    TranscriptionStream,
)
from dragoman.pipeline.providers.cascade_text import NAME, refused, system_prompt

# The same buffer before a session opens and pause before reopening one as the other streams.
from dragoman.pipeline.providers.streaming import (
    PRECONNECT_BUFFER_S,
    RECONNECT_PAUSE_S,
    SessionLost,
)

log = logging.getLogger(__name__)

TICK_S = 0.25  # partial captions at most four times a second; time-bound commits
DRAIN_WAIT_S = 2.0  # closing: how long the last item may take to be transcribed


@dataclass
class Piece:
    """A committed piece of the source, for translation."""

    uid: str  # its item's
    source: str
    last: bool  # the item's last piece
    t_start_ms: int
    t_end_ms: int
    committed_at: float


@dataclass
class Spoken:
    uid: str
    text: str
    marks: dict[str, float]


class Simultaneous(FrameProcessor):
    """The simultaneous stage (before the TTS). Idle while the call is consecutive."""

    def __init__(
        self,
        ctx: CallContext,
        client: AsyncOpenAI,
        stream: TranscriptionStream,
        active: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._ctx = ctx
        self._client = client
        self._stream = stream
        self.pair = ctx.pair
        self.active = active
        s = ctx.settings
        self._commit = CommitPolicy(s.cascade_min_words, s.cascade_max_words, s.cascade_max_wait_s)
        self._pace = PacePolicy(
            s.cascade_faster_after_s, s.cascade_join_after_s, s.cascade_max_speed,
            s.cascade_chars_per_s,
        )  # fmt: skip
        self._chunk_bytes = RATE * 2 * s.provider_chunk_ms // 1000
        self._max_item_bytes = int(s.max_utterance_s * RATE * 2)
        self._resampler = create_stream_resampler()
        self._t0 = time.monotonic()
        # The transcription session.
        self._gen = 0  # bumped by each open/close: a session's task ends when it is stale
        self._conn: TranscriptionConnection | None = None  # open and ready
        self._pending = bytearray()  # 24 kHz audio not yet sent
        self._uncommitted = 0  # bytes sent since the last commit
        self._session_task: asyncio.Task | None = None
        # Items, oldest first; pieces go out in speech order (an item after the ones before).
        self._items: dict[str, ItemText] = {}
        self._seq = 0
        self._dirty: set[str] = set()  # items whose partial source caption is due
        self._completions = 0  # items completed so far (closing waits for the last one)
        # Translation, in order, with the pieces before as context.
        self._pieces: asyncio.Queue[Piece] = asyncio.Queue()
        self._context: deque[tuple[str, str]] = deque(maxlen=s.cascade_context_segments or 1)
        self._translated: dict[str, str] = {}  # item uid → its translation so far
        # Speech, in order, paced.
        self._to_speak: deque[Spoken] = deque()
        self._wake_speaker = asyncio.Event()
        self._tts_idle = asyncio.Event()
        self._tts_idle.set()
        self._clock = SpeechClock()
        self._speed = 1.0
        self._tasks: list[asyncio.Task] = []

    # --- frames --------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._t0 = time.monotonic()
            await self.push_frame(frame, direction)  # the TTS must start before we speak
            self._tasks = [
                self.create_task(self._translate_loop(), "cascade-translate"),
                self.create_task(self._speak_loop(), "cascade-speak"),
                self.create_task(self._tick(), "cascade-tick"),
            ]
            if self.active:
                self._open()
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._shutdown()
        await self.push_frame(frame, direction)

    # --- from the tap --------------------------------------------------------------------
    async def feed(self, frame: InputAudioRawFrame) -> None:
        pcm = frame.audio
        if frame.sample_rate != RATE:
            pcm = await self._resampler.resample(pcm, frame.sample_rate, RATE)
        self._pending += pcm
        if self._conn is None:
            # Keep the start of what is said while the session opens; drop older audio.
            limit = int(PRECONNECT_BUFFER_S * RATE * 2)
            if len(self._pending) > limit:
                del self._pending[: len(self._pending) - limit]
            return
        await self._send_pending()

    async def end_of_speech(self) -> None:
        """Our VAD heard the speaker stop: what they said becomes one item."""
        await self._send_pending(flush=True)
        await self._commit_audio()

    async def _send_pending(self, flush: bool = False) -> None:
        conn = self._conn
        while conn is not None and (
            len(self._pending) >= self._chunk_bytes or (flush and self._pending)
        ):
            chunk = bytes(self._pending[: self._chunk_bytes])
            del self._pending[: self._chunk_bytes]
            try:
                await conn.append(chunk)
            except Exception as e:  # the receive loop notices the broken session
                log.debug("%s: sending audio failed: %s", NAME, e)
                return
            self._uncommitted += len(chunk)
            if self._uncommitted >= self._max_item_bytes:
                await self._commit_audio()  # a long monologue is cut into items too

    async def _commit_audio(self) -> None:
        conn = self._conn
        if conn is None or not self._uncommitted:
            return
        self._uncommitted = 0
        try:
            await conn.commit()
        except Exception as e:
            log.debug("%s: commit failed: %s", NAME, e)

    # --- control -------------------------------------------------------------------------
    async def set_active(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        if active:
            self._open()
        else:
            await self._close()

    async def set_pair(self, pair: LanguagePair) -> None:
        self.pair = pair
        self._context.clear()  # the previous pieces were in other languages
        conn = self._conn
        if conn is not None:
            try:
                await conn.update(pair)  # the transcription language, on the open session
            except Exception as e:
                # A broken session: the run loop reopens it, with the new pair.
                log.warning("%s: language switch failed: %s", NAME, page.clip(e))

    def _open(self) -> None:
        self._gen += 1
        self._session_task = self.create_task(self._run(self._gen), "cascade-stream")

    async def _close(self) -> None:
        """Stop streaming; the last item is transcribed (and translated), then the session
        closes, in the background."""
        self._gen += 1
        conn, self._conn = self._conn, None
        task, self._session_task = self._session_task, None
        rest, self._pending = bytes(self._pending), bytearray()
        if self._speed != 1.0:  # turn by turn speaks at the normal pace again
            self._speed = 1.0
            delta = OpenAITTSService.Settings(speed=1.0)
            await self.push_frame(TTSUpdateSettingsFrame(delta=delta))
        if conn is None:
            if task is not None:
                await self.cancel_task(task)
            return
        self._tasks.append(self.create_task(self._drain(conn, task, rest), "cascade-drain"))

    async def _drain(
        self, conn: TranscriptionConnection, task: asyncio.Task | None, rest: bytes
    ) -> None:
        done_before = self._completions
        with contextlib.suppress(Exception):  # a broken session has nothing left to give
            if rest:
                await conn.append(rest)
                self._uncommitted += len(rest)
            if self._uncommitted:
                self._uncommitted = 0
                await conn.commit()
                deadline = time.monotonic() + DRAIN_WAIT_S
                while time.monotonic() < deadline and (
                    self._items or self._completions == done_before
                ):
                    await asyncio.sleep(TICK_S / 5)
        await conn.close()
        if task is not None:
            await self.cancel_task(task)

    async def _shutdown(self) -> None:
        self._gen += 1
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        for task in [self._session_task, *self._tasks]:
            if task is not None and not task.done():
                await self.cancel_task(task)
        self._session_task, self._tasks = None, []

    # --- the transcription session -------------------------------------------------------
    async def _run(self, gen: int) -> None:
        attempts = 0
        while gen == self._gen:
            try:
                await self._session_once(gen)
                why = "the session was closed"
            except ProviderError as e:
                if e.code == "provider_refused":  # auth/config: retrying cannot help
                    await self.push_frame(refused(e.detail))
                    return
                why = f"{e.code}: {e.detail}"
            except (SessionLost, websockets.ConnectionClosed) as e:
                why = f"dropped: {e}"
            except (OSError, websockets.WebSocketException, TimeoutError) as e:
                why = f"unreachable: {type(e).__name__}: {e}"
            if gen != self._gen:
                return  # closed on purpose
            self._conn = None
            attempts += 1
            if attempts > self._ctx.settings.provider_reconnects:
                await self._fail("provider_lost", why, end_reason="provider_lost")
                return
            await self._fail("provider_reconnecting", why)
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _fail(self, code: str, detail: object, end_reason: str | None = None) -> None:
        await self.push_frame(
            CallErrorFrame(
                code=code,
                detail=detail,
                fatal=end_reason is not None,
                origin=NAME,
                end_reason=end_reason,
            )
        )

    async def _session_once(self, gen: int) -> None:
        timeout = self._ctx.settings.provider_connect_timeout_s
        deadline = time.monotonic() + timeout
        async with contextlib.AsyncExitStack() as stack:
            conn = await asyncio.wait_for(
                stack.enter_async_context(self._stream.connect(self.pair, timeout)), timeout
            )
            ready = False
            while True:
                if not ready:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("the session was not accepted in time")
                    events = await asyncio.wait_for(conn.receive(), left)
                else:
                    events = await conn.receive()
                for ev in events:
                    if ev.kind == "ready" and not ready and gen == self._gen:
                        ready, self._conn, self._uncommitted = True, conn, 0
                        await self._send_pending()  # the words said while connecting
                    await self._on_event(ev)

    async def _on_event(self, ev: StreamEvent) -> None:
        now = time.monotonic()
        if ev.kind == "delta":
            item = self._item(ev.item)
            item.add(ev.text, now, self._now_ms())
            self._dirty.add(ev.item)
            await self._commit_ready(now)
        elif ev.kind in ("completed", "failed"):
            if ev.kind == "failed":
                log.warning("%s: an item's transcription failed: %s", NAME, page.clip(ev.text))
            item = self._items.get(ev.item)
            transcript = ev.text if ev.kind == "completed" else (item.text if item else "")
            if item is None and not transcript.strip():
                return  # silence between two commits
            item = item or self._item(ev.item)
            item.finish(transcript, self._now_ms())
            self._completions += 1
            await self._commit_ready(now)
        elif ev.kind == "error":
            if ev.fatal:
                raise ProviderError(
                    "provider_refused" if ev.code == "invalid_api_key" else "provider_unavailable",
                    ev.text,
                )
            if ev.code in BENIGN_CODES:
                log.debug("%s: %s", NAME, ev.text)
            else:
                await self._fail("provider_error", ev.text)

    def _item(self, item_id: str) -> ItemText:
        item = self._items.get(item_id)
        if item is None:
            self._seq += 1
            item = self._items[item_id] = ItemText(f"i{self._seq}", self._now_ms())
        return item

    async def _commit_ready(self, now: float) -> None:
        """Commit what the policy allows, oldest item first: completed items hand over
        their rest (final), then the oldest open item its stable pieces."""
        while self._items:
            item_id, item = next(iter(self._items.items()))
            if item.completed:
                del self._items[item_id]
                self._dirty.discard(item_id)
                await self._source(item, final=True)
                self._queue(item, item.rest, last=True, now=now)
                continue
            while piece := item.take(self._commit, now):
                self._queue(item, piece, last=False, now=now)
            break

    def _queue(self, item: ItemText, text: str, last: bool, now: float) -> None:
        self._pieces.put_nowait(
            Piece(item.uid, text, last, item.t_start_ms, item.t_end_ms, committed_at=now)
        )

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for item_id in list(self._dirty):
                item = self._items.get(item_id)
                if item is not None and item.text.strip():
                    await self._source(item, final=False)
            self._dirty.clear()
            await self._commit_ready(time.monotonic())  # the time bound

    async def _source(self, item: ItemText, final: bool) -> None:
        kind = SourceTranscriptionFrame if final else InterimSourceTranscriptionFrame
        await self.push_frame(
            kind(
                text=item.text.strip(),
                user_id="",
                timestamp="",
                language=self.pair.source,  # type: ignore[arg-type]  (our code, not Pipecat's)
                utterance_id=item.uid,
                t_start_ms=item.t_start_ms,
                t_end_ms=item.t_end_ms,
            )
        )

    def _now_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    # --- translation ---------------------------------------------------------------------
    async def _translate_loop(self) -> None:
        while True:
            piece = await self._pieces.get()
            first = piece.uid not in self._translated
            if first:
                self._translated[piece.uid] = ""
                await self.push_frame(TranslatingFrame(utterance_id=piece.uid))
            translation = await self._translate(piece) if piece.source else ""
            so_far = " ".join(t for t in (self._translated[piece.uid], translation) if t)
            self._translated[piece.uid] = so_far
            if piece.last:
                del self._translated[piece.uid]
            if translation or (piece.last and so_far):
                await self.push_frame(
                    TranslationFrame(
                        text=so_far,
                        language=self.pair.target,
                        utterance_id=piece.uid,
                        final=piece.last,
                        t_start_ms=piece.t_start_ms,
                        t_end_ms=piece.t_end_ms,
                        # A translated piece never changes: all of a partial line is stable.
                        stable=None if piece.last else len(so_far),
                    )
                )
            if translation:
                marks = {"committed": piece.committed_at, "translated": time.monotonic()}
                self._to_speak.append(Spoken(piece.uid, translation, marks))
                self._wake_speaker.set()
            elif piece.last and not so_far:
                await self.push_frame(NothingToSpeakFrame(utterance_id=piece.uid))

    def messages_for(self, source: str) -> list[dict[str, str]]:
        """The request: system prompt, the previous pieces as the conversation so far (each
        source and the translation given), then the new piece."""
        s = self._ctx.settings
        system = system_prompt(s.translation_prompt, self.pair, self._ctx.glossary)
        msgs = [{"role": "system", "content": f"{system}\n\n{s.cascade_segment_prompt}"}]
        if s.cascade_context_segments:
            for said, given in self._context:
                msgs += [{"role": "user", "content": said}, {"role": "assistant", "content": given}]
        msgs.append({"role": "user", "content": source})
        return msgs

    async def _translate(self, piece: Piece) -> str:
        s = self._ctx.settings
        try:
            reply = await self._client.chat.completions.create(
                model=s.openai_llm_model,
                messages=self.messages_for(piece.source),  # type: ignore[arg-type]
                temperature=0,
                timeout=s.provider_connect_timeout_s * 2,
            )
        except (AuthenticationError, PermissionDeniedError) as e:
            await self.push_frame(refused(e))
            return ""
        except APIError as e:  # timeouts and 5xx included: this piece is lost, not the call
            detail = f"translation of a piece of {piece.uid}: {type(e).__name__}: {e}"
            await self._fail("provider_error", detail)
            return ""
        translation = (reply.choices[0].message.content or "").strip()
        if translation:
            self._context.append((piece.source, translation))
        return translation

    # --- speech --------------------------------------------------------------------------
    def tts_audio(self, seconds: float) -> None:
        """From the TTS: this much speech was made (it plays in real time)."""
        self._clock.add(seconds, time.monotonic())

    def tts_done(self) -> None:
        """From the TTS: a request is finished."""
        self._tts_idle.set()

    async def _speak_loop(self) -> None:
        lead = self._ctx.settings.cascade_speech_lead_s
        while True:
            await self._wake_speaker.wait()
            if not self._to_speak:
                self._wake_speaker.clear()
                continue
            # One request at a time: the next waits for the previous one's audio (a stuck
            # TTS is not waited for forever) and for the speech ahead to run low, so that
            # what piles up meanwhile can still be joined or sped up.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tts_idle.wait(), 10.0)
            ahead = self._clock.ahead(time.monotonic())
            if ahead > lead:
                await asyncio.sleep(ahead - lead)
                continue
            waiting = sum(len(p.text) for p in self._to_speak)
            pace = pace_for(backlog_s(ahead, waiting, self._pace), self._pace)
            take = list(self._to_speak) if pace.join else [self._to_speak[0]]
            for _ in take:
                self._to_speak.popleft()
            if pace.speed != self._speed:
                self._speed = pace.speed
                delta = OpenAITTSService.Settings(speed=pace.speed)
                await self.push_frame(TTSUpdateSettingsFrame(delta=delta))
            self._tts_idle.clear()
            marks = {**take[0].marks, "speak": time.monotonic()}
            text = " ".join(p.text for p in take)
            await self.push_frame(
                SpeakTranslationFrame(text=text, utterance_id=take[0].uid, marks=marks)
            )


class AudioTap(FrameProcessor):
    """Before the turn-by-turn STT: in simultaneous mode the caller's audio goes to the
    stream instead (and the VAD's end of speech commits it); in consecutive mode everything
    passes. A switch in the middle of a sentence hands it over: to simultaneous, the STT is
    told the speech stopped (it transcribes what it has); to consecutive, that it started
    (it takes the rest)."""

    def __init__(self, sink: Simultaneous, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sink = sink
        self._speaking = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
        if self._sink.active and direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, InputAudioRawFrame):
                await self._sink.feed(frame)
                return
            if isinstance(frame, VADUserStoppedSpeakingFrame):
                await self._sink.end_of_speech()
                return
            if isinstance(frame, VADUserStartedSpeakingFrame):
                return
        await self.push_frame(frame, direction)

    async def set_active(self, active: bool) -> None:
        if active == self._sink.active:
            return
        if self._speaking:
            hand_over: Callable[[], Frame] = (
                VADUserStoppedSpeakingFrame if active else VADUserStartedSpeakingFrame
            )
            await self.push_frame(hand_over())
        await self._sink.set_active(active)
