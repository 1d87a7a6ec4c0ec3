"""The models a node loads once: Whisper (speech → text, any language → English) and Piper.

Both release the GIL while they compute, so one process serves concurrent requests from
a thread pool.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

WHISPER_RATE = 16000


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    compute_ms: float


class WhisperEngine:
    def __init__(self, model: str, compute_type: str, threads: int, workers: int) -> None:
        from faster_whisper import WhisperModel

        if threads <= 0:
            threads = max(1, (os.cpu_count() or 2) // max(1, workers))
        self._model = WhisperModel(
            model, device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=workers
        )

    def run(self, pcm16: bytes, language: str | None, task: str) -> Transcript:
        """Transcribe (``task="transcribe"``) or translate to English (``task="translate"``)."""
        t0 = time.perf_counter()
        audio = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0
        segments, info = self._model.transcribe(
            audio,
            language=language,
            task=task,
            beam_size=1,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        parts = []
        for seg in segments:
            # Whisper invents text over noise and silence ("Thank you for watching"); a
            # segment it is itself unsure contains speech is dropped.
            if seg.no_speech_prob > 0.6 and seg.avg_logprob < -0.8:
                continue
            if seg.compression_ratio > 2.6:
                continue
            parts.append(seg.text.strip())
        text = " ".join(p for p in parts if p).strip()
        return Transcript(
            text=text,
            language=info.language,
            duration_s=len(audio) / WHISPER_RATE,
            compute_ms=(time.perf_counter() - t0) * 1000,
        )


class PiperEngine:
    def __init__(self, voice_path: Path, out_rate: int) -> None:
        from piper import PiperVoice

        self._voice = PiperVoice.load(str(voice_path))
        self._in_rate = int(self._voice.config.sample_rate)
        self.out_rate = out_rate

    def synthesize(self, text: str) -> Iterator[bytes]:
        """PCM16 mono at ``out_rate``, one chunk per sentence as soon as it is ready."""
        import soxr

        for chunk in self._voice.synthesize(text):
            audio = chunk.audio_int16_array
            if self._in_rate != self.out_rate:
                audio = soxr.resample(audio, self._in_rate, self.out_rate)
            yield np.asarray(audio, dtype=np.int16).tobytes()
