"""A Pipecat transport over the call's plain RTP (``RtpMedia``): what the pipeline sees of
the caller. Input frames are pushed straight downstream as they are decoded (no per-frame
queue and timeout in between); output frames are handed to the 20 ms packet clock, and a
write returns once its audio has left, so Pipecat's speaking state follows real time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from dragoman.agent.rtp_media import RtpMedia

MAX_PENDING = 50  # 1 s of caller audio waiting for the pipeline; older audio is dropped


class RtpInputTransport(BaseInputTransport):
    def __init__(self, media: RtpMedia, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._media = media
        self._pending: deque[bytes] = deque(maxlen=MAX_PENDING)
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._wake = asyncio.Event()
        self._media.on_audio = self._on_audio
        self._pump_task = self.create_task(self._pump(), "rtp-in")

    def _on_audio(self, pcm: bytes) -> None:
        self._pending.append(pcm)
        if self._wake is not None:
            self._wake.set()

    async def _pump(self) -> None:
        assert self._wake is not None
        rate = self._media.in_rate
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                pcm = self._pending.popleft()
                await self.push_frame(
                    InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)
                )

    async def _stop_pump(self) -> None:
        self._media.on_audio = lambda _pcm: None
        if self._pump_task is not None:
            await self.cancel_task(self._pump_task)
            self._pump_task = None

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_pump()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_pump()
        await super().cancel(frame)


class RtpOutputTransport(BaseOutputTransport):
    def __init__(self, media: RtpMedia, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._media = media

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        await self._media.write(frame.audio)
        return True


class RtpTransport(BaseTransport):
    def __init__(self, media: RtpMedia, params: TransportParams) -> None:
        super().__init__(name="rtp")
        self._input = RtpInputTransport(media, params, name="rtp-input")
        self._output = RtpOutputTransport(media, params, name="rtp-output")

    def input(self) -> RtpInputTransport:
        return self._input

    def output(self) -> RtpOutputTransport:
        return self._output
