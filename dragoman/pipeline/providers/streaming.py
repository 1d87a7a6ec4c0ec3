"""A speech-to-speech provider session: caller audio streams up continuously, translated
audio and transcript deltas stream back.

The provider's official SDK does the wire work (URL, auth, framing, its typed events); each
provider module adapts its SDK to ``SpeechProvider`` / ``SpeechSession`` below. Everything a
call needs around it lives here once: connecting with a deadline, buffering the first words
while the session opens, chunking and resampling the caller's audio, caption lines, speech
turns, language switches, and what happens when the provider fails (the page is told, in
our words; one reconnect; then the call ends with a reason).

It reports as every provider does, in frames (``pipeline.frames``; ``PageMessages`` writes
the page's messages): transcriptions and ``TranslationFrame``s per caption line, speech as
``TTSStartedFrame`` → ``TTSAudioRawFrame``s → ``TTSStoppedFrame`` (once the provider has
been quiet a while), failures as ``CallErrorFrame``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import websockets
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from dragoman.contract import page
from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import (
    CallErrorFrame,
    InterimSourceTranscriptionFrame,
    SourceTranscriptionFrame,
    TranslationFrame,
)
from dragoman.pipeline.providers.base import CallContext, ProviderError
from dragoman.pipeline.providers.captions import CaptionLine, CaptionStream

log = logging.getLogger(__name__)

PRECONNECT_BUFFER_S = 3.0  # speech said while the session opens is sent once it is open
QUIET_S = 1.0  # no translated audio for this long ends a speech turn (TTSStoppedFrame)
RECONNECT_PAUSE_S = 0.5
CLOSE_WAIT_S = 1.0


def websocket_options(open_timeout: float, ping_interval_s: float) -> dict[str, Any]:
    """What both SDKs pass on to ``websockets.connect``: our keepalive (a stalled provider is
    noticed within two ping intervals), no size limit surprises, and no per-message deflate
    (base64 PCM barely compresses; deflating it costs a call ~6 % of its CPU)."""
    return {
        "open_timeout": open_timeout,
        "ping_interval": ping_interval_s,
        "ping_timeout": ping_interval_s,
        "max_size": 2**22,
        "compression": None,
    }


@dataclass
class ProviderEvent:
    kind: Literal["ready", "audio", "source_text", "translation_text", "error", "closed"]
    audio: bytes = b""
    rate: int = 24000
    text: str = ""  # a transcript delta; for "error", the provider's words (logged only)
    code: str = ""  # for "error": our code, a key of page.ERRORS
    fatal: bool = False


class SessionLost(RuntimeError):
    """The provider session ended or broke (a reconnect may help); the text is for the log."""


class SpeechSession(Protocol):
    """One open provider session, on top of the provider's SDK connection."""

    async def receive(self) -> list[ProviderEvent]:
        """The events of the provider's next message (may be none). Raises ProviderError,
        SessionLost, or what the SDK's transport raises when the connection breaks."""
        ...

    async def send_audio(self, pcm16: bytes) -> None: ...

    async def switch(self, pair: LanguagePair) -> bool:
        """Change languages in the open session; False: it cannot (reconnect instead)."""
        ...

    async def close(self) -> None:
        """End the session politely (what the provider asks for), then close the socket."""
        ...


class SpeechProvider(Protocol):
    name: str
    input_rate: int  # the sample rate the provider wants caller audio at

    def connect(self, pair: LanguagePair, timeout: float) -> AbstractAsyncContextManager[Any]:
        """Open a session for ``pair`` (entered: a ``SpeechSession``); the session is open
        at its "ready" event. Raises ProviderError when the provider refuses or is
        unreachable."""
        ...


class StreamingInterpretation(FrameProcessor):
    """The provider stage of a call (``Interpretation``) for streaming speech translation."""

    def __init__(self, ctx: CallContext, provider: SpeechProvider, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ctx = ctx
        self._provider = provider
        self.pair = ctx.pair
        s = ctx.settings
        self._chunk_bytes = provider.input_rate * 2 * s.provider_chunk_ms // 1000
        self._resampler = create_stream_resampler()
        self._pending = bytearray()  # resampled caller audio not yet sent
        self._session: SpeechSession | None = None
        self._open = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._t0 = time.monotonic()
        self._source = CaptionStream()
        self._translation = CaptionStream()
        self._last_audio_at: float | None = None
        self._partial: dict[page.Side, CaptionLine] = {}  # not yet sent to the page
        self._speaking = False
        self._closing = False
        self._restart = False  # a deliberate reconnect (language switch), not a failure

    @property
    def stages(self) -> Sequence[FrameProcessor]:
        return (self,)

    # --- frames --------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self._on_caller_audio(frame)
            return
        if isinstance(frame, StartFrame):
            self._t0 = time.monotonic()
            self._task = self.create_task(self._run(), f"{self._provider.name}-session")
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._shutdown()
        await self.push_frame(frame, direction)

    async def _on_caller_audio(self, frame: InputAudioRawFrame) -> None:
        pcm = frame.audio
        rate = self._provider.input_rate
        if frame.sample_rate != rate:
            pcm = await self._resampler.resample(pcm, frame.sample_rate, rate)
        self._pending += pcm
        if not self._open.is_set():
            # Keep the start of what was said while the session opens; drop older audio.
            limit = int(PRECONNECT_BUFFER_S * rate * 2)
            if len(self._pending) > limit:
                del self._pending[: len(self._pending) - limit]
            return
        await self._send_pending()

    async def _send_pending(self) -> None:
        session = self._session
        while session is not None and len(self._pending) >= self._chunk_bytes:
            chunk = bytes(self._pending[: self._chunk_bytes])
            del self._pending[: self._chunk_bytes]
            try:
                await session.send_audio(chunk)
            except Exception as e:  # the receive loop notices the broken session
                log.debug("%s: sending audio failed: %s", self._provider.name, e)
                return

    # --- the provider session --------------------------------------------------------------
    async def _run(self) -> None:
        attempts = 0
        while not self._closing:
            # ``why``: the provider's or the library's words, for the log; the page is told
            # our sentence for the code (page.failure).
            try:
                await self._session_once()
                if self._closing:
                    return
                why = "the session was closed"
            except ProviderError as e:
                if e.code == "provider_refused":  # auth/config: retrying cannot help
                    await self._fail(e.code, e.detail, end_reason="provider_error")
                    return
                why = f"{e.code}: {e.detail}"
            except SessionLost as e:
                why = f"dropped: {e}"
            except websockets.ConnectionClosed as e:
                why = f"dropped: {e}"
            except (OSError, websockets.WebSocketException, TimeoutError) as e:
                why = f"unreachable: {type(e).__name__}: {e}"
            self._open.clear()
            self._session = None
            if self._closing:
                return
            if self._restart:
                self._restart = False
                continue
            attempts += 1
            if attempts > self._ctx.settings.provider_reconnects:
                await self._fail("provider_lost", why, end_reason="provider_lost")
                return
            await self._fail("provider_reconnecting", why)
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _fail(self, code: str, detail: object, end_reason: str | None = None) -> None:
        """Tell the page (our sentence for ``code``; ``detail`` is logged), and with
        ``end_reason`` end the call after that."""
        await self.push_frame(
            CallErrorFrame(
                code=code,
                detail=detail,
                fatal=end_reason is not None,
                origin=self._provider.name,
                end_reason=end_reason,
            )
        )

    async def _session_once(self) -> None:
        timeout = self._ctx.settings.provider_connect_timeout_s
        deadline = time.monotonic() + timeout
        async with contextlib.AsyncExitStack() as stack:
            session: SpeechSession = await asyncio.wait_for(
                stack.enter_async_context(self._provider.connect(self.pair, timeout)), timeout
            )
            self._session = session
            ticker = self.create_task(self._tick(), "captions")
            try:
                await self._receive(session, deadline)
            finally:
                self._session = None
                await self.cancel_task(ticker)

    async def _receive(self, session: SpeechSession, deadline: float) -> None:
        while True:
            if not self._open.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the session was not accepted in time")
                events = await asyncio.wait_for(session.receive(), left)
            else:
                events = await session.receive()
            for ev in events:
                await self._on_event(ev)
                if ev.kind == "closed":
                    return

    async def _on_event(self, ev: ProviderEvent) -> None:
        if ev.kind == "ready":
            if not self._open.is_set():
                self._open.set()
                await self._send_pending()  # the words said while connecting
        elif ev.kind == "audio":
            if not self._speaking:
                self._speaking = True
                await self.push_frame(TTSStartedFrame())
            self._last_audio_at = time.monotonic()
            await self.push_frame(
                TTSAudioRawFrame(audio=ev.audio, sample_rate=ev.rate, num_channels=1)
            )
        elif ev.kind in ("source_text", "translation_text"):
            side = "source" if ev.kind == "source_text" else "translation"
            stream = self._source if side == "source" else self._translation
            line = stream.add(ev.text, self._now())
            if line is not None:
                self._partial[side] = line  # sent by _tick, at most four times a second
        elif ev.kind == "error":
            # ev.code is ours (the provider module maps theirs); ev.text is the provider's own.
            if ev.fatal:
                code = (
                    "provider_refused" if ev.code == "provider_refused" else "provider_unavailable"
                )
                raise ProviderError(code, ev.text or "a fatal error event")
            await self._fail(ev.code or "provider_error", ev.text)

    async def _tick(self) -> None:
        """Close caption lines after a pause and end a speech turn after quiet."""
        while True:
            await asyncio.sleep(0.25)
            now = self._now()
            # The latest partial line of each side, once per tick: providers send a delta
            # per word or two, and a page needs no more than four updates a second.
            await self._caption("source", self._partial.pop("source", None))
            await self._caption("translation", self._partial.pop("translation", None))
            await self._caption("source", self._source.close_if_quiet(now))
            await self._caption("translation", self._translation.close_if_quiet(now))
            if self._speaking and time.monotonic() - (self._last_audio_at or 0) > QUIET_S:
                self._speaking = False
                await self.push_frame(TTSStoppedFrame())

    def _now(self) -> float:
        return time.monotonic() - self._t0

    async def _caption(self, side: page.Side, line: CaptionLine | None) -> None:
        if line is None:
            return
        times = {"utterance_id": line.uid, "t_start_ms": line.t_start_ms, "t_end_ms": line.t_end_ms}
        frame: Frame
        if side == "translation":
            frame = TranslationFrame(
                text=line.text, language=self.pair.target, final=line.final, **times
            )
        else:
            kind = SourceTranscriptionFrame if line.final else InterimSourceTranscriptionFrame
            frame = kind(
                text=line.text, user_id="", timestamp="", language=self.pair.source, **times
            )
        await self.push_frame(frame)

    # --- control -------------------------------------------------------------------------
    async def set_pair(self, pair: LanguagePair) -> None:
        old, self.pair = self.pair, pair
        session = self._session
        if session is None or not self._open.is_set():
            return  # the session being opened (or reopened) uses the new pair
        try:
            if not await session.switch(pair):
                self._restart = True
                await session.close()  # the run loop reconnects with the new pair
        except (SessionLost, websockets.ConnectionClosed, OSError) as e:
            self.pair = old
            # The session relays only ``message`` (our sentence) to the page: log the rest here.
            log.warning("%s: language switch failed: %s", self._provider.name, page.clip(e))
            raise ProviderError("provider_unavailable", f"closed during a switch: {e}") from e

    async def set_interpretation(self, mode: str) -> None:
        # The service translates as the words come: simultaneous is all it does.
        if mode != "simultaneous":
            raise ProviderError("unsupported_interpretation", f"{self._provider.name}: {mode}")

    async def _shutdown(self) -> None:
        self._closing = True
        session = self._session
        if session is not None:
            try:
                await asyncio.wait_for(session.close(), CLOSE_WAIT_S)
            except Exception as e:  # the call is ending: nothing to tell anyone
                log.debug("%s: closing the session: %s", self._provider.name, e)
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None
