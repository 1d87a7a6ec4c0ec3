"""Voices translations through the node's TTS and reports speaking/listening state.

Synthesis runs in its own task so frames keep flowing while a sentence is being made;
translations are spoken one after another, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from dragoman.agent import messages
from dragoman.inference.client import InferenceClient, InferenceError
from dragoman.pipeline.frames import SpeakTranslationFrame


class Speaker(FrameProcessor):
    def __init__(
        self,
        *,
        client: InferenceClient,
        notify: Callable[[dict[str, Any]], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._client = client
        self._notify = notify
        self._queue: asyncio.Queue[SpeakTranslationFrame] = asyncio.Queue()
        self._busy = False
        self._task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, SpeakTranslationFrame):
            self._queue.put_nowait(frame)
            return
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._speak_loop(), "speak")
        elif isinstance(frame, (EndFrame, CancelFrame)) and self._task:
            await self.cancel_task(self._task)
            self._task = None
        elif isinstance(frame, BotStoppedSpeakingFrame) and self._queue.empty() and not self._busy:
            self._notify(messages.state("listening"))
        await self.push_frame(frame, direction)

    async def play(self, pcm16: bytes, sample_rate: int) -> None:
        await self.push_frame(
            OutputAudioRawFrame(audio=pcm16, sample_rate=sample_rate, num_channels=1)
        )

    async def _speak_loop(self) -> None:
        while True:
            item = await self._queue.get()
            self._busy = True
            marks = dict(item.marks)
            marks["tts_start"] = time.monotonic()  # after waiting for the previous sentence
            try:
                first = True
                async for pcm, rate in self._client.tts(item.text):
                    if first:
                        marks["tts_first_chunk"] = time.monotonic()
                        self._notify(messages.state("speaking"))
                    await self.play(pcm, rate)
                    if first:
                        marks["first_audio_out"] = time.monotonic()
                        self._notify(messages.metrics(item.utterance_id, marks))
                        first = False
            except InferenceError as e:  # the node's speech service is being restarted
                detail = f"speech synthesis of {item.utterance_id}: {e}"
                self._notify(messages.failure("inference_unavailable", detail, origin="local"))
            except Exception as e:
                detail = f"speech synthesis of {item.utterance_id}: {type(e).__name__}: {e}"
                self._notify(messages.failure("tts_failed", detail, origin="local"))
            finally:
                self._busy = False
