"""One call inside an agent process: the Pipecat pipeline over the call's plain RTP,
control messages from the page (relayed by the worker), and the per-call limits."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import psutil
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from dragoman.agent.limits import CallLimits, CallVitals, limit_exceeded
from dragoman.config import Settings
from dragoman.contract import page
from dragoman.contract.errors import InterpretationError
from dragoman.contract.page import Hangup, InterpretNow, PushToTalk, SetInterpretation, Talk
from dragoman.contract.pipe import RtpPeer
from dragoman.inference.client import InferenceClient
from dragoman.languages import LanguageError, LanguagePair
from dragoman.pipeline.chime import chime
from dragoman.pipeline.echo_gate import EchoGate
from dragoman.pipeline.page_messages import PageMessages
from dragoman.pipeline.providers.base import CallContext, ProviderError, build_interpretation
from dragoman.pipeline.providers.catalog import (
    ProviderSpec,
    resolve_interpretation,
    validate_for_mode,
)
from dragoman.pipeline.room_router import RoomRouter
from dragoman.pipeline.smart_turn import SmartTurnGate, TurnModel
from dragoman.pipeline.talk import Talk as TalkGates
from dragoman.pipeline.transports.rtp import RtpTransport
from dragoman.pipeline.transports.rtp_media import RtpMedia
from dragoman.rate import gcra

log = logging.getLogger(__name__)

PACING_REPORT_S = 5


class CallSession:
    """One call inside an agent process: builds the provider's Pipecat pipeline over the
    call's plain-RTP transport, applies the page's control messages (languages,
    interpretation, push-to-talk, hang-up) and enforces the call's limits (maximum duration,
    connect timeout, no media, memory)."""

    def __init__(
        self,
        *,
        media: RtpMedia,
        peer: RtpPeer,
        notify: Callable[[dict[str, Any]], None],
        vad: SileroVADAnalyzer | None,
        turn_model: TurnModel | None = None,
        pair: LanguagePair,
        settings: Settings,
        client: InferenceClient | None,
        provider: ProviderSpec,
        glossary: str | None = None,
        interpretation: str = "simultaneous",
        report_pacing: Callable[[int, int], None] | None = None,
        to_peer: Callable[[bytes, int], None] | None = None,
    ) -> None:
        self.media = media
        self._send = notify
        self.settings = settings
        self.started_at = time.monotonic()
        self.connected_at: float | None = None
        self.end_reason: str | None = None
        self._limits = CallLimits(
            max_call_s=settings.max_call_s,
            no_media_timeout_s=settings.no_media_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            memory_limit_mb=settings.call_memory_limit_mb,
        )
        out_rate = settings.audio_out_sample_rate
        self.transport = RtpTransport(
            media,
            peer,
            TransportParams(
                audio_in_enabled=True,
                audio_in_sample_rate=provider.input_rate,
                audio_out_enabled=True,
                audio_out_sample_rate=out_rate,
                audio_out_end_silence_secs=0,  # the call is over: nobody hears it
            ),
        )
        self.provider = provider
        self.pair = pair
        # The mode in force (simultaneous | consecutive); ``self.interpretation`` is the
        # provider stage that carries it out.
        self.interpretation_mode = interpretation
        self._report_pacing = report_pacing
        self.interpretation = build_interpretation(
            provider,
            CallContext(
                pair=pair,
                settings=settings,
                client=client,
                glossary=glossary,
                interpretation=interpretation,
            ),
        )
        # What the provider stages report becomes the page's messages here, and only here.
        self.page_messages = PageMessages(self.notify, self.end)
        # Two people, one device (or a room: each device also plays the other person): the
        # agent must not interpret its own output coming back through the microphone.
        self.echo_gate = (
            EchoGate(enabled=pair.conversation or pair.room) if provider.uses_vad else None
        )
        # Consecutive interpretation ends a turn on Smart Turn's verdict after a short
        # silence; simultaneous keeps the VAD's silence rule (see pipeline.smart_turn).
        self.turns = (
            SmartTurnGate(
                turn_model,
                vad=vad,
                stop_s=settings.smart_turn_stop_s,
                fallback_s=settings.vad_stop_s,
                threshold=settings.smart_turn_threshold,
                enabled=interpretation == "consecutive",
            )
            if turn_model is not None and vad is not None and provider.uses_vad
            else None
        )
        # Push-to-talk and "interpret now" steer the utterances our VAD cuts (pipeline.talk);
        # a speech-to-speech provider finds the ends of speech itself.
        self.talk = TalkGates() if vad is not None and provider.uses_vad else None
        # A room's translations are for the other person (see pipeline.room_router).
        self.router = RoomRouter(to_peer or (lambda _pcm, _rate: None), active=pair.room)
        pipeline = Pipeline(
            [
                self.transport.input(),
                *([self.talk.mic] if self.talk else []),
                *([VADProcessor(vad_analyzer=vad)] if vad and provider.uses_vad else []),
                *([self.turns] if self.turns else []),
                *([self.echo_gate] if self.echo_gate else []),
                *([self.talk.cutter] if self.talk else []),
                *self.interpretation.stages,
                self.page_messages,
                self.router,
                self.transport.output(),
            ]
        )
        self.worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=provider.input_rate, audio_out_sample_rate=out_rate
            ),
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )
        self._chime = chime(out_rate)
        self._switch_tat: float | None = None  # language switch rate (GCRA state)

    def notify(self, msg: dict[str, Any]) -> None:
        """A message for the page (the worker relays it on the call's control channel): the
        session's own (languages, control replies, the end) and ``PageMessages``'."""
        self._send(msg)

    async def media_up(self) -> None:
        """The caller's WebRTC is up (Janus' ``webrtcup``): greet with the chime."""
        if self.connected_at is not None or self.end_reason is not None:
            return
        self.connected_at = time.monotonic()
        await self.transport.output().queue_frame(
            OutputAudioRawFrame(
                audio=self._chime, sample_rate=self.settings.audio_out_sample_rate, num_channels=1
            )
        )
        self._languages()
        self.notify(page.state("listening"))

    # --- two-party rooms ------------------------------------------------------------------
    async def play_from_peer(self, pcm: bytes, rate: int) -> None:
        """The other participant's words, translated by their agent, for our caller."""
        await self.transport.output().queue_frame(
            OutputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)
        )

    async def room_joined(self, language: str) -> None:
        """Our call became a room's host: translate into the guest's language, for them."""
        try:
            pair = validate_for_mode(self.provider, self.pair.source, language, "room")
            await self.interpretation.set_pair(pair)
        except (LanguageError, ProviderError) as e:
            # The guest still hears nothing from us, and both pages are told why.
            self.notify(page.error(e.code, e.message))
            return
        self.pair = pair
        self.router.active = True
        if self.echo_gate is not None:
            self.echo_gate.enabled = True
        self._languages()

    def room_left(self) -> None:
        """The other person left: our translations are ours to hear again."""
        self.router.active = False

    async def on_control(self, raw: Any) -> None:
        try:
            msg = page.parse_control(raw)
        except page.BadMessage as e:
            self.notify(page.error("bad_message", str(e)))
            return
        if isinstance(msg, Hangup):
            await self.end("hangup")
            return
        if isinstance(msg, (PushToTalk, Talk, InterpretNow)):
            await self._talk_control(msg)  # a press and a release per sentence: not rate-limited
            return
        per_minute = self.settings.language_switches_per_minute
        if per_minute > 0:
            # Each switch restarts a provider session (billed, slow): a page may not spin it.
            # Interpretation changes share the budget: they re-plan the provider's work too.
            wait, self._switch_tat = gcra(self._switch_tat, time.monotonic(), per_minute, 60.0)
            if wait > 0:
                why = (
                    "Too many language or interpretation changes; "
                    f"try again in {math.ceil(wait)} s."
                )
                self.notify(page.error("rate_limited", why))
                self._languages()
                return
        if isinstance(msg, SetInterpretation):
            await self._set_interpretation(msg.interpretation)
            return
        spec = self.provider
        try:
            pair = validate_for_mode(spec, msg.source, msg.target, self.pair.mode)
            await self.interpretation.set_pair(pair)
        except (LanguageError, ProviderError) as e:
            # The call goes on with the pair it had; the page is told why.
            self.notify(page.error(e.code, e.message))
            self._languages()
            return
        self.pair = pair
        self._languages()

    async def _set_interpretation(self, requested: str) -> None:
        try:
            mode = resolve_interpretation(self.provider, self.pair.mode, requested)
            await self.interpretation.set_interpretation(mode)
        except (InterpretationError, ProviderError) as e:
            # The call goes on as it was; the page is told why and what is in force.
            self.notify(page.error(e.code, e.message))
            self._languages()
            return
        self.interpretation_mode = mode
        if self.turns is not None:
            self.turns.enabled = mode == "consecutive"
        self._languages()

    async def _talk_control(self, msg: page.TalkControl) -> None:
        talk = self.talk
        if talk is None:
            self.notify(page.error("unsupported_control", page.ERRORS["unsupported_control"]))
            return
        if isinstance(msg, InterpretNow):
            await talk.interpret_now()
            return
        if isinstance(msg, PushToTalk):
            await talk.set(msg.on, held=False)
        elif not talk.push_to_talk:
            self.notify(page.error("bad_message", "talk needs push_to_talk on first"))
        else:
            await talk.set(True, held=msg.held)
        self.notify(page.talk(talk.push_to_talk, talk.held))

    def _languages(self) -> None:
        """Tell the page the pair and the interpretation in force."""
        self.notify(page.languages(self.pair, self.interpretation_mode))

    async def end(self, reason: str) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        log.info("call ending: %s", reason)
        self.notify(page.state("ended", reason))
        await self.worker.cancel(reason=reason)

    def flush_pacing(self) -> None:
        """Hand the frames sent since the last report to the worker (Prometheus counters)."""
        frames, late = self.media.pacing.take_delta()
        if self._report_pacing and frames:
            self._report_pacing(frames, late)

    async def _watchdog(self) -> None:
        proc = psutil.Process()
        ticks = 0
        while self.end_reason is None:
            await asyncio.sleep(1.0)
            ticks += 1
            if ticks % PACING_REPORT_S == 0:
                self.flush_pacing()
            vitals = CallVitals(
                now=time.monotonic(),
                started_at=self.started_at,
                connected_at=self.connected_at,
                last_media_at=self.media.last_rx_at,
                rss_mb=proc.memory_info().rss / 2**20,
            )
            reason = limit_exceeded(self._limits, vitals)
            if reason:
                await self.end(reason)

    async def run(self) -> str:
        """Run the call to its end; returns the end reason."""
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(self.worker)
        watchdog = asyncio.create_task(self._watchdog())
        try:
            await runner.run()
        finally:
            watchdog.cancel()
            self.flush_pacing()
            self.media.close()
        return self.end_reason or "disconnected"
