"""Consecutive interpretation's end of turn: Smart Turn v3 (Pipecat's model, ~8 M parameters
on the CPU) instead of a fixed silence.

The VAD ends speech after a short silence (``smart_turn_stop_s``, 0.2 s). ``SmartTurnGate``,
between the VAD and the provider stages, holds each ``VADUserStoppedSpeakingFrame`` and has
the model judge the turn's audio: a finished sentence is released at once, an unfinished one
(a pause mid-sentence) when the silence reaches the old rule (``vad_stop_s``, 0.5 s). If the
person speaks again first, the held stop and the VAD's new start are both swallowed: the
provider sees one utterance, as it would have with the longer silence.

Pipecat's own integration (``TurnAnalyzerUserTurnStopStrategy``) lives in its LLM user-turn
aggregator, which this pipeline has none of; the stop/start frames are what our providers
cut utterances on, so the gate works on those. The gate is switched per call
(``enabled``): in simultaneous interpretation it passes everything and the VAD keeps the
fallback stop time.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections import deque
from importlib import resources
from typing import Any, Protocol

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

log = logging.getLogger(__name__)

RATE = 16000  # the model's rate, and the input rate wherever the Silero VAD runs
BYTES_PER_S = RATE * 2
WINDOW_S = 8  # the model sees the last 8 s of a turn
# Before the VAD's start: its confirmation time (0.2 s) and Pipecat's pre-speech 0.5 s.
PREROLL_S = 0.7
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"  # shipped in the pipecat-ai wheel


class TurnModel(Protocol):
    def completion(self, pcm16_16k: bytes) -> float:
        """The probability that the turn in this audio (ending in silence) is complete.
        Blocking: the gate runs it off the event loop."""
        ...


def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


class SmartTurnModel:
    """Pipecat's bundled Smart Turn v3.2 ONNX model, with Pipecat's own feature extraction.

    Loaded once in the forkserver (``agent.shared_turn``) and run in every call process, so
    what a run allocates is that call's own memory. Measured in a forked child, five runs:
    ~27–46 MB of unique memory with onnxruntime's CPU arena (it keeps every activation
    buffer) — over the 30 MB a call may cost — against ~3.5 MB with the arena off, a warm-up
    run before the fork and the C heap trimmed after each run."""

    def __init__(self, path: str | None = None, warm: bool = True) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        so.intra_op_num_threads = 1  # a call's share of a core; no thread pool to fork
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_cpu_mem_arena = False
        if path is None:
            data = resources.files("pipecat.audio.turn.smart_turn.data")
            path = str(data.joinpath(MODEL_FILE))
        self._session = ort.InferenceSession(path, sess_options=so)
        self._trim = _malloc_trim()
        from pipecat.audio.turn.smart_turn._whisper_features import (
            compute_whisper_log_mel_features,
        )

        self._features = compute_whisper_log_mel_features  # the model's own preprocessing
        if warm:  # kernels set up once, in pages every forked call shares
            self.completion(bytes(BYTES_PER_S))

    def completion(self, pcm16_16k: bytes) -> float:
        audio = np.frombuffer(pcm16_16k, dtype=np.int16)[-WINDOW_S * RATE :]
        audio = audio.astype(np.float32) / 32768.0
        audio = np.pad(audio, (WINDOW_S * RATE - len(audio), 0))  # silence before, as Pipecat
        features = self._features(audio, do_normalize=True)[np.newaxis]
        outputs = self._session.run(None, {"input_features": features})
        probability = float(np.asarray(outputs[0]).reshape(-1)[0])
        if self._trim is not None:
            self._trim(0)  # give the run's buffers back (see the class docstring)
        return probability


def set_vad_stop(vad: VADAnalyzer, stop_s: float) -> None:
    """Change the silence after which the VAD ends speech, mid-call. (``set_params`` would
    also reset the VAD to quiet, and a turn under way would lose its stop.)"""
    vad._params = vad.params.model_copy(update={"stop_secs": stop_s})
    if vad.sample_rate:  # else applied when the pipeline starts (set_sample_rate)
        vad._vad_stop_frames = round(stop_s * vad.sample_rate / vad.num_frames_required())


def hold_s(silence_s: float, fallback_s: float) -> float:
    """How much longer a stop that came after ``silence_s`` may be held before the silence
    rule ends the turn anyway."""
    return max(0.0, fallback_s - silence_s)


class SmartTurnGate(FrameProcessor):
    def __init__(
        self,
        model: TurnModel,
        *,
        vad: VADAnalyzer | None,
        stop_s: float,
        fallback_s: float,
        threshold: float,
        enabled: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._model = model
        self._vad = vad
        self._stop_s = stop_s
        self._fallback_s = fallback_s
        self._threshold = threshold
        self._chunks: deque[bytes] = deque()  # the last WINDOW_S of input
        self._buffered = 0
        self._turn_bytes: int | None = None  # input since the turn's start; None: no turn
        self._held: VADUserStoppedSpeakingFrame | None = None
        self._deciding: asyncio.Task | None = None
        self.released = 0  # turns the model ended early (measured)
        self.swallowed = 0  # pauses the model kept inside a turn (measured)
        self._enabled = False
        self.enabled = enabled

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        """On for consecutive interpretation: the VAD stops short and the model decides; off
        (simultaneous), the VAD ends speech after the fallback silence by itself. A stop held
        when it is turned off is released by its pending decision (by the fallback at the
        latest)."""
        self._enabled = on
        if self._vad is not None:
            set_vad_stop(self._vad, self._stop_s if on else self._fallback_s)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, InputAudioRawFrame):
                self._keep(frame.audio)
            elif isinstance(frame, VADUserStartedSpeakingFrame):
                if self._held is not None:
                    # Speech again before the turn was judged over: one utterance goes on.
                    self.swallowed += 1
                    await self._drop_held()
                    return
                self._turn_bytes = 0
            elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._hold(frame):
                return
            elif isinstance(frame, (EndFrame, CancelFrame)):
                await self._drop_held()
        await self.push_frame(frame, direction)

    def _keep(self, pcm: bytes) -> None:
        self._chunks.append(pcm)
        self._buffered += len(pcm)
        while self._buffered - len(self._chunks[0]) >= WINDOW_S * BYTES_PER_S:
            self._buffered -= len(self._chunks.popleft())
        if self._turn_bytes is not None:
            self._turn_bytes += len(pcm)

    def _hold(self, frame: VADUserStoppedSpeakingFrame) -> bool:
        """Hold the stop for the model's verdict; False: pass it on now."""
        wait = hold_s(frame.stop_secs, self._fallback_s)
        if not self._enabled or wait <= 0 or self._held is not None:
            return False
        turn = (self._turn_bytes or 0) + int(PREROLL_S * BYTES_PER_S)
        pcm = b"".join(self._chunks)[-turn:]
        self._held = frame
        self._deciding = self.create_task(self._decide(frame, pcm, wait), "smart_turn")
        return True

    async def _decide(self, frame: VADUserStoppedSpeakingFrame, pcm: bytes, wait: float) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        deadline = asked + wait
        try:
            # Off the event loop: ~50–150 ms of CPU (onnxruntime lets go of the GIL).
            p = await asyncio.wait_for(asyncio.to_thread(self._model.completion, pcm), wait)
        except TimeoutError:
            p = 0.0  # no verdict before the fallback: the silence rule ends the turn
        except Exception:
            log.exception("smart turn failed; the silence rule ends this turn")
            p = 0.0
        early = p >= self._threshold
        log.debug("smart turn: %.2f after %.0f ms", p, (loop.time() - asked) * 1000)
        if not early:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
        if self._held is frame:
            self._held, self._deciding = None, None
            if early:
                self.released += 1
            self._turn_bytes = None
            await self.push_frame(frame)

    async def _drop_held(self) -> None:
        task, self._deciding, self._held = self._deciding, None, None
        if task is not None:
            await self.cancel_task(task)

    async def cleanup(self) -> None:
        await self._drop_held()
        await super().cleanup()
