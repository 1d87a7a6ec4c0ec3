"""The models a node loads once: Whisper (speech → text, any language → English) and Piper.

Both release the GIL while they compute, so one process serves concurrent requests from
a thread pool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
WINDOW_S = 30  # Whisper's encoder window
MAX_TOKENS = 224
ENCODINGS_KEPT = 8  # recent utterances whose encoder output may still be asked for


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    compute_ms: float


class WhisperEngine:
    """Whisper via CTranslate2. The source caption (transcribe) and the translation of an
    utterance are two decodes of the same audio, so the encoder, which costs most of the
    time for a few seconds of speech (it always sees a 30 s window), runs once per utterance:
    the first of the two requests encodes, the other waits for and reuses the result."""

    def __init__(self, model: str, compute_type: str, threads: int, workers: int) -> None:
        from faster_whisper import WhisperModel

        if threads <= 0:
            # Every core for each decode: the shared encode is the long step, and it runs
            # once at a time per utterance.
            threads = max(1, os.cpu_count() or 2)
        self._model = WhisperModel(
            model, device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=workers
        )
        self._lock = threading.Lock()
        self._encodings: OrderedDict[bytes, Future] = OrderedDict()

    def run(self, pcm16: bytes, language: str | None, task: str) -> Transcript:
        """Transcribe (``task="transcribe"``) or translate to English (``task="translate"``)."""
        t0 = time.perf_counter()
        audio = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0
        if language is None or len(audio) > WINDOW_S * WHISPER_RATE:
            text, detected = self._run_full(audio, language, task)
        else:
            text, detected = self._decode(self._encoded(pcm16, audio), language, task), language
        return Transcript(
            text=text,
            language=detected,
            duration_s=len(audio) / WHISPER_RATE,
            compute_ms=(time.perf_counter() - t0) * 1000,
        )

    def identify(self, pcm16: bytes, candidates: list[str]) -> tuple[str, dict[str, float]]:
        """Which of ``candidates`` is spoken (conversation mode: the pair's two languages).

        Whisper's language head scores every language; restricting the choice to the pair
        is far more reliable than its open guess on a short sentence. The encoder output is
        the one the following transcribe/translate of the same audio reuse."""
        audio = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0
        window = pcm16[: WINDOW_S * WHISPER_RATE * 2]
        encoded = self._encoded(window, audio[: WINDOW_S * WHISPER_RATE])
        scores = dict(self._model.model.detect_language(encoded)[0])
        probs = {c: float(scores.get(f"<|{c}|>", 0.0)) for c in candidates}
        return max(candidates, key=lambda c: probs[c]), probs

    def _encoded(self, pcm16: bytes, audio: np.ndarray) -> Any:
        """The encoder output for this audio, computed once even when asked concurrently."""
        key = hashlib.blake2b(pcm16, digest_size=16).digest()
        with self._lock:
            future = self._encodings.get(key)
            owner = future is None
            if owner:
                future = self._encodings[key] = Future()
                while len(self._encodings) > ENCODINGS_KEPT:
                    self._encodings.popitem(last=False)
        if owner:
            try:
                from faster_whisper.audio import pad_or_trim

                features = pad_or_trim(self._model.feature_extractor(audio))
                future.set_result(self._model.encode(features))
            except BaseException as e:
                future.set_exception(e)
                raise
        return future.result()

    def _decode(self, encoded: Any, language: str, task: str) -> str:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        m = self._model
        tokenizer = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task=task, language=language)
        prompt = m.get_prompt(tokenizer, [], without_timestamps=True)
        result = m.model.generate(
            encoded,
            [prompt],
            beam_size=1,
            max_length=MAX_TOKENS,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if _is_hallucination(result.no_speech_prob, avg_logprob, get_compression_ratio(text)):
            return ""
        return text

    def _run_full(self, audio: np.ndarray, language: str | None, task: str) -> tuple[str, str]:
        """faster-whisper's own loop: language detection, or audio over one window."""
        segments, info = self._model.transcribe(
            audio,
            language=language,
            task=task,
            beam_size=1,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        parts = [
            seg.text.strip()
            for seg in segments
            if not _is_hallucination(seg.no_speech_prob, seg.avg_logprob, seg.compression_ratio)
        ]
        return " ".join(p for p in parts if p).strip(), info.language


def _is_hallucination(no_speech_prob: float, avg_logprob: float, compression: float) -> bool:
    # Whisper invents text over noise and silence ("Thank you for watching"); text it is
    # itself unsure is speech, or that repeats itself, is dropped.
    return (no_speech_prob > 0.6 and avg_logprob < -0.8) or compression > 2.6


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
