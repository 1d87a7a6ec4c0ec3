"""A Pipecat transport over the call's plain RTP (``RtpMedia``): what the pipeline sees of
the caller.

Pipecat's base transports move audio through queues and a sender task per direction, each
waking per chunk; a call process that does nothing else can do with less. Here the media
clock (a timer, ``RtpMedia``) decodes and sends; one task pushes the caller's audio
downstream a frame at a time, and the output side appends the agent's speech to the
media's send buffer as frames arrive (resampled to the send rate if needed).
``BotStartedSpeakingFrame``/``BotStoppedSpeakingFrame`` are still emitted both ways —
started when speech is queued, stopped once it has all left — so processors that follow
the agent's speaking state work as with Pipecat's own transports.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from dragoman.contract.pipe import RtpPeer
from dragoman.pipeline.transports.rtp_media import RtpMedia


class RtpOutputTransport(BaseOutputTransport):
    def __init__(self, media: RtpMedia, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._media = media
        self._resampler = create_stream_resampler()
        self._speaking = False

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._speak(frame)
            return
        if isinstance(frame, InterruptionFrame):
            self._media.clear()
        await super().process_frame(frame, direction)

    async def _speak(self, frame: OutputAudioRawFrame) -> None:
        pcm = frame.audio
        if frame.sample_rate != self._media.out_rate:
            pcm = await self._resampler.resample(pcm, frame.sample_rate, self._media.out_rate)
        if not pcm:
            return
        self._media.write(pcm)
        if not self._speaking:
            self._speaking = True
            await self._both_ways(BotStartedSpeakingFrame)

    async def drained(self) -> None:
        """Called by the media clock once every queued sample has been sent."""
        if self._speaking:
            self._speaking = False
            await self._both_ways(BotStoppedSpeakingFrame)

    async def _both_ways(self, kind: type[Frame]) -> None:
        down, up = kind(), kind()
        up.broadcast_sibling_id, down.broadcast_sibling_id = down.id, up.id
        await self.push_frame(down)
        await self.push_frame(up, FrameDirection.UPSTREAM)


class RtpInputTransport(BaseInputTransport):
    """Starts the call's media clock at StartFrame and pushes what it decodes."""

    def __init__(
        self,
        media: RtpMedia,
        peer: RtpPeer,
        output: RtpOutputTransport,
        params: TransportParams,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._media = media
        self._peer = peer
        self._output = output
        self._clock: asyncio.Task | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self._clock is None:
            self._media.start(self._peer)
            self._clock = self.create_task(self._pump(), "rtp-in")

    async def _pump(self) -> None:
        rate = self._media.in_rate
        while True:
            frames, drained = await self._media.events()
            for pcm in frames:
                await self.push_frame(
                    InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)
                )
            if drained:
                await self._output.drained()

    async def _stop_clock(self) -> None:
        if self._clock is not None:
            await self.cancel_task(self._clock)
            self._clock = None

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_clock()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_clock()
        await super().cancel(frame)


class RtpTransport(BaseTransport):
    def __init__(self, media: RtpMedia, peer: RtpPeer, params: TransportParams) -> None:
        super().__init__(name="rtp")
        self._output = RtpOutputTransport(media, params, name="rtp-output")
        self._input = RtpInputTransport(media, peer, self._output, params, name="rtp-input")

    def input(self) -> RtpInputTransport:
        return self._input

    def output(self) -> RtpOutputTransport:
        return self._output
