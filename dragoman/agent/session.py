"""One call inside an agent process: the Pipecat pipeline over the caller's WebRTC peer,
control messages from the page, and the per-call limits."""

from __future__ import annotations

import asyncio
import logging
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
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from dragoman.agent import messages
from dragoman.agent.limits import CallLimits, CallVitals, limit_exceeded
from dragoman.config import Settings
from dragoman.inference.client import InferenceClient
from dragoman.languages import LanguageError, LanguagePair, validate_pair
from dragoman.pipeline.chime import chime
from dragoman.pipeline.media_watch import MediaWatch
from dragoman.pipeline.pacing import PacingMonitor, send_20ms_frames
from dragoman.pipeline.providers.base import CallContext, ProviderError, build_interpretation
from dragoman.pipeline.providers.catalog import ProviderSpec

log = logging.getLogger(__name__)

PACING_REPORT_S = 5
FLUSH_MAX_S = 5.0  # the final "ended" message may need one SCTP retransmission (RTO ≥ 1 s)


class CallSession:
    def __init__(
        self,
        *,
        connection: SmallWebRTCConnection,
        vad: SileroVADAnalyzer | None,
        pair: LanguagePair,
        settings: Settings,
        client: InferenceClient | None,
        provider: ProviderSpec,
        glossary: str | None = None,
        report_pacing: Callable[[int, int], None] | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.started_at = time.monotonic()
        self.connected_at: float | None = None
        self.end_reason: str | None = None
        self._ended = asyncio.Event()
        self._limits = CallLimits(
            max_call_s=settings.max_call_s,
            no_media_timeout_s=settings.no_media_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            memory_limit_mb=settings.call_memory_limit_mb,
        )
        out_rate = settings.audio_out_sample_rate
        self.transport = SmallWebRTCTransport(
            connection,
            TransportParams(
                audio_in_enabled=True,
                audio_in_sample_rate=provider.input_rate,
                audio_out_enabled=True,
                audio_out_sample_rate=out_rate,
                audio_out_10ms_chunks=2,
            ),
        )
        self.provider = provider
        self.pair = pair
        self.media = MediaWatch()
        self.pacing = PacingMonitor()
        self._report_pacing = report_pacing
        self.interpretation = build_interpretation(
            provider,
            CallContext(
                pair=pair,
                settings=settings,
                notify=self.notify,
                end_call=self.end,
                client=client,
                glossary=glossary,
            ),
        )
        pipeline = Pipeline(
            [
                self.transport.input(),
                self.media,
                *([VADProcessor(vad_analyzer=vad)] if vad and provider.uses_vad else []),
                *self.interpretation.stages,
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
        self._register_handlers()

    def notify(self, msg: dict[str, Any]) -> None:
        self.connection.send_app_message(msg)

    def _register_handlers(self) -> None:
        @self.transport.event_handler("on_client_connected")
        async def on_connected(_transport: Any, _client: Any) -> None:
            self.connected_at = time.monotonic()
            send_20ms_frames(self.transport)
            self.pacing.attach(self.transport)
            await self.transport.output().queue_frame(
                OutputAudioRawFrame(
                    audio=self._chime,
                    sample_rate=self.settings.audio_out_sample_rate,
                    num_channels=1,
                )
            )
            self.notify(messages.languages(self.pair.source, self.pair.target))
            self.notify(messages.state("listening"))

        @self.transport.event_handler("on_client_disconnected")
        async def on_disconnected(_transport: Any, _client: Any) -> None:
            await self.end("disconnected")

        @self.transport.event_handler("on_app_message")
        async def on_message(_transport: Any, message: Any, _sender: Any) -> None:
            await self.on_control(message)

    async def on_control(self, raw: Any) -> None:
        try:
            msg = messages.parse_control(raw)
        except messages.BadMessage as e:
            self.notify(messages.error("bad_message", str(e)))
            return
        if isinstance(msg, messages.Hangup):
            await self.end("hangup")
            return
        spec = self.provider
        try:
            title = None if spec.name == "local" else spec.title
            pair = validate_pair(msg.source, msg.target, spec.targets, title)
            await self.interpretation.set_pair(pair)
        except (LanguageError, ProviderError) as e:
            # The call goes on with the pair it had; the page is told why.
            self.notify(messages.error(e.code, e.message))
            self.notify(messages.languages(self.pair.source, self.pair.target))
            return
        self.pair = pair
        self.notify(messages.languages(pair.source, pair.target))

    async def end(self, reason: str) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        log.info("call ending: %s", reason)
        self.notify(messages.state("ended", reason))
        await self._flush_data_channel()
        await self.worker.cancel(reason=reason)
        self._ended.set()

    async def _flush_data_channel(self) -> None:
        """Wait until the page has acknowledged what we sent (the "ended" reason), briefly.

        Closing the peer drops SCTP data still queued or unacknowledged; on a busy node that
        loses the message telling the caller why the call ended. aiortc exposes no "flushed"
        signal, so this reads its send queues.
        """
        deadline = time.monotonic() + FLUSH_MAX_S
        # Ended before the page's channel opened (a provider refused at once): Pipecat
        # queues our messages until it opens, so give it the moment it needs.
        channel = getattr(self.connection, "_data_channel", None)
        while time.monotonic() < deadline and (channel is None or channel.readyState != "open"):
            await asyncio.sleep(0.05)
            channel = getattr(self.connection, "_data_channel", None)
        if channel is None:
            return
        sctp = channel.transport
        while time.monotonic() < deadline and channel.readyState == "open":
            pending = channel.bufferedAmount
            pending += len(getattr(sctp, "_outbound_queue", ()))
            pending += len(getattr(sctp, "_sent_queue", ()))
            if pending == 0:
                return
            await asyncio.sleep(0.02)

    def flush_pacing(self) -> None:
        """Hand the frames sent since the last report to the worker (Prometheus counters)."""
        frames, late = self.pacing.stats.take_delta()
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
                last_media_at=self.media.last_media_at,
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
            try:
                await asyncio.wait_for(self.connection.disconnect(), 2.0)
            except Exception as e:  # the peer may be long gone
                log.debug("disconnect: %s", e)
        return self.end_reason or "disconnected"
