"""The models a node loads once: Whisper (speech → text, any language → English) and Piper.

Both release the GIL while they compute, so one process serves concurrent requests from
a thread pool.
"""

from __future__ import annotations

import hashlib
import logging
import math
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

from dragoman.inference import wire

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
FRAMES_PER_S = 100  # log-mel frames per second of audio (a hop of 160 samples)
ALIGN_STEPS_PER_S = 50  # encoder positions per second (its convolution has a stride of 2)
WINDOW_S = 30  # the window Whisper's encoder was trained on
FULL_FRAMES = WINDOW_S * FRAMES_PER_S
MAX_LENGTH = 448  # Whisper's decoder context, the prompt included
PROMPT_CHARS = wire.PROMPT_CHARS  # of the previous text, kept from its end
PROMPT_TOKENS = MAX_LENGTH // 2 - 1  # what faster-whisper keeps of a previous text
ENCODINGS_KEPT = 16  # recent utterances whose encoder output may still be asked for

# The repetition guard. Greedy decoding sometimes loops ("This dish is very delicious. This
# dish is …") until the token limit, mostly on short windows; a decode that produces more
# tokens than speech of that length can hold, text that compresses too well, or a stretch of
# MIN_REPEAT_TOKENS or more said twice in a row, is a loop.
# ``bench whisper-window`` measured at most 6.4 tokens per second of speech (Japanese text;
# 5.5 for English translations), so a budget of 10 + 12 per second of audio leaves real
# sentences twice the room they need and stops a loop long before the 112 tokens it ran to.
TOKENS_BASE = 10
TOKENS_PER_S = 12.0
MAX_NEW_TOKENS = 220  # below MAX_LENGTH // 2, so going over the budget can always be seen
LOOP_COMPRESSION = 2.4  # faster-whisper's own fallback threshold
MIN_REPEAT_TOKENS = 5
# A decode the guard catches looping is done again with beam search on the same encoding
# (faster-whisper's default beam): on a 5.9 s Japanese utterance whose greedy translation
# looped on both its 10 s and the 30 s window ("I will be in the middle of the morning." twice),
# beam 5 gave a sentence on either; it costs a few decoder passes and no second encoding.
RETRY_BEAM = 5
SENTENCE_END = (".", "?", "!", "。", "？", "！")
# faster-whisper's defaults: punctuation that joins the word after / before it.
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class Window:
    """How much audio the encoder sees: the utterance plus ``pad_s`` of padding, at least
    ``min_s``, at most Whisper's 30 s. The default is the 30 s window itself, which costs
    10-20 times more encoder than a few seconds of speech need."""

    min_s: float = float(WINDOW_S)
    pad_s: float = 0.0

    def frames(self, duration_s: float) -> int:
        seconds = max(duration_s + self.pad_s, self.min_s)
        frames = math.ceil(seconds * FRAMES_PER_S - 1e-6)
        frames += frames % 2  # the encoder's stride-2 convolution wants an even count
        return max(2, min(frames, FULL_FRAMES))

    def label(self) -> str:
        if self.min_s >= WINDOW_S:
            return f"{WINDOW_S} s"
        if self.pad_s <= 0:
            return f"max(audio, {self.min_s:g} s)"
        if self.min_s <= 0:
            return f"audio+{self.pad_s:g} s"
        return f"max(audio+{self.pad_s:g} s, {self.min_s:g} s)"


def token_budget(duration_s: float) -> int:
    """Most tokens a decode of this much audio may produce before it counts as a loop."""
    return min(MAX_NEW_TOKENS, math.ceil(TOKENS_BASE + TOKENS_PER_S * duration_s))


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    compute_ms: float
    # Asked for with ``words=True``: each {start, end, text, probability}, seconds from the
    # start of the audio; ``segments`` groups them into sentences ({start, end, text}).
    words: tuple[dict[str, Any], ...] | None = None
    segments: tuple[dict[str, Any], ...] | None = None
    window_s: float = float(WINDOW_S)  # the encoder window of the decode that counted
    retried: bool = False  # the repetition guard re-decoded it with beam search


@dataclass(frozen=True)
class Decoded:
    """One decode (no temperature fallback), before the hallucination filter."""

    tokens: tuple[int, ...]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression: float
    looped: bool  # the repetition guard tripped: over the token budget or too repetitive

    @property
    def hallucinated(self) -> bool:
        return _is_hallucination(self.no_speech_prob, self.avg_logprob, self.compression)


class WhisperEngine:
    """Whisper via CTranslate2. The source caption (transcribe) and the translation of an
    utterance are two decodes of the same audio, so the encoder runs once per utterance:
    the first of the two requests encodes, the other waits for and reuses the result.

    The encoder sees a ``window`` sized to the audio rather than Whisper's 30 s (see
    ``Window``). Decoding is greedy, with no temperature fallback (which re-decodes up to
    five times); a decode the repetition guard catches looping is done again with beam
    search (``RETRY_BEAM``) and dropped if it loops then too."""

    def __init__(
        self,
        model: str,
        compute_type: str,
        threads: int,
        workers: int,
        window: Window | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        self.threads, self.workers = max(1, threads), max(1, workers)
        self.window = window or Window()
        self._model = WhisperModel(
            model,
            device="cpu",
            compute_type=compute_type,
            cpu_threads=self.threads,
            num_workers=self.workers,
        )
        self._lock = threading.Lock()
        self._encodings: OrderedDict[bytes, Future] = OrderedDict()

    def run(
        self,
        pcm16: bytes,
        language: str | None,
        task: str,
        *,
        prompt: str | None = None,
        words: bool = False,
    ) -> Transcript:
        """Transcribe (``task="transcribe"``) or translate to English (``task="translate"``).

        ``prompt``: the text that came before (its last ``PROMPT_CHARS``), which Whisper
        continues from. ``words``: word timings too (for ``translate``, the English words,
        aligned to the source audio)."""
        t0 = time.perf_counter()
        audio = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0
        duration = len(audio) / WHISPER_RATE
        if language is None or duration > WINDOW_S:
            text, detected, found = self._run_full(audio, language, task, prompt, words)
            return Transcript(
                text=text,
                language=detected,
                duration_s=duration,
                compute_ms=(time.perf_counter() - t0) * 1000,
                words=found,
                segments=None if found is None else _segments(found),
            )
        frames = self.window.frames(duration)
        encoded = self._encoded(pcm16, audio, frames)
        decoded = self.decode(encoded, language, task, prompt=prompt, duration_s=duration)
        retried = decoded.looped
        if retried:
            decoded = self.decode(
                encoded, language, task, prompt=prompt, duration_s=duration, beam_size=RETRY_BEAM
            )
        # Still looping: junk (the decode was cut at its budget, maybe mid-character),
        # dropped as the hallucination filter drops it.
        text = "" if decoded.hallucinated or decoded.looped else decoded.text
        found = None
        if words:
            content = min(len(audio) // (WHISPER_RATE // FRAMES_PER_S), frames)
            tokens = decoded.tokens if text else ()
            found = self.align(encoded, tokens, language, task, content, duration)
        return Transcript(
            text=text,
            language=language,
            duration_s=duration,
            compute_ms=(time.perf_counter() - t0) * 1000,
            words=found,
            segments=None if found is None else _segments(found),
            window_s=frames / FRAMES_PER_S,
            retried=retried,
        )

    def identify(self, pcm16: bytes, candidates: list[str]) -> tuple[str, dict[str, float]]:
        """Which of ``candidates`` is spoken (conversation mode: the pair's two languages).

        Whisper's language head scores every language; restricting the choice to the pair
        is far more reliable than its open guess on a short sentence. The encoder output is
        the one the following transcribe/translate of the same audio reuse."""
        audio = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0
        window = pcm16[: WINDOW_S * WHISPER_RATE * 2]
        audio = audio[: WINDOW_S * WHISPER_RATE]
        encoded = self._encoded(window, audio, self.window.frames(len(audio) / WHISPER_RATE))
        scores = dict(self._model.model.detect_language(encoded)[0])
        probs = {c: float(scores.get(f"<|{c}|>", 0.0)) for c in candidates}
        return max(candidates, key=lambda c: probs[c]), probs

    def encode(self, audio: np.ndarray, frames: int) -> Any:
        """The encoder output for ``audio`` in a window of ``frames`` log-mel frames (its
        features padded with zeros, as faster-whisper pads them to 30 s)."""
        from faster_whisper.audio import pad_or_trim

        return self._model.encode(pad_or_trim(self._model.feature_extractor(audio), frames))

    def _encoded(self, pcm16: bytes, audio: np.ndarray, frames: int) -> Any:
        """The encoder output for this audio, computed once even when asked concurrently."""
        key = hashlib.blake2b(pcm16 + frames.to_bytes(4, "little"), digest_size=16).digest()
        with self._lock:
            future = self._encodings.get(key)
            owner = future is None
            if owner:
                future = self._encodings[key] = Future()
                while len(self._encodings) > ENCODINGS_KEPT:
                    self._encodings.popitem(last=False)
        if owner:
            try:
                future.set_result(self.encode(audio, frames))
            except BaseException as e:
                future.set_exception(e)
                with self._lock:  # a failure is not kept: the next request tries again
                    if self._encodings.get(key) is future:
                        del self._encodings[key]
                raise
        return future.result()

    def _tokenizer(self, language: str, task: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        m = self._model
        return Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task=task, language=language)

    def decode(
        self,
        encoded: Any,
        language: str,
        task: str,
        *,
        prompt: str | None = None,
        duration_s: float = WINDOW_S,
        beam_size: int = 1,
    ) -> Decoded:
        """One decode (greedy unless ``beam_size`` > 1), stopped by the repetition guard's
        token budget."""
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        m = self._model
        tokenizer = self._tokenizer(language, task)
        previous: list[int] = []
        if prompt and prompt.strip():
            previous = tokenizer.encode(" " + prompt.strip()[-PROMPT_CHARS:])[-PROMPT_TOKENS:]
        sequence = m.get_prompt(tokenizer, previous, without_timestamps=True)
        budget = token_budget(duration_s)
        # CTranslate2's Whisper produces at most max_length // 2 new tokens, and at most
        # max_length less the prompt: room for one token over the budget, to see a loop.
        max_length = min(MAX_LENGTH, max(2 * (budget + 1), len(sequence) + budget + 1))
        result = m.model.generate(
            encoded,
            [sequence],
            beam_size=beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        over = len(tokens) > budget
        tokens = tokens[:budget]
        text = tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        compression = get_compression_ratio(text) if text else 0.0
        return Decoded(
            tokens=tuple(tokens),
            text=text,
            avg_logprob=avg_logprob,
            no_speech_prob=result.no_speech_prob,
            compression=compression,
            looped=over or compression > LOOP_COMPRESSION or repeats(tokens),
        )

    def align(
        self,
        encoded: Any,
        tokens: tuple[int, ...] | list[int],
        language: str,
        task: str,
        content_frames: int,
        duration_s: float,
    ) -> tuple[dict[str, Any], ...]:
        """Word timings from the alignment heads' cross-attention (as faster-whisper's
        ``word_timestamps``), in seconds from the start of the audio. A translation's words
        are English, split on spaces (faster-whisper would split them as the source
        language's characters); a transcription's as the tokenizer splits that language."""
        from faster_whisper.transcribe import merge_punctuations

        if not tokens or content_frames < 2:
            return ()
        tokenizer = self._tokenizer(language, task)
        tokens = list(tokens)
        result = self._model.model.align(
            encoded, tokenizer.sot_sequence, [tokens], content_frames, median_filter_width=7
        )[0]
        text_indices = np.array([pair[0] for pair in result.alignments])
        time_indices = np.array([pair[1] for pair in result.alignments])
        split = tokenizer.split_tokens_on_spaces if task == "translate" else None
        names, groups = (split or tokenizer.split_to_word_tokens)(tokens + [tokenizer.eot])
        if len(groups) <= 1:
            return ()
        bounds = np.pad(np.cumsum([len(g) for g in groups[:-1]]), (1, 0))
        jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
        jump_times = time_indices[jumps] / ALIGN_STEPS_PER_S
        if len(jump_times) <= bounds[-1]:
            return ()  # an alignment shorter than the text: no timings rather than wrong ones
        probs = result.text_token_probs
        alignment = [
            {
                "word": name,
                "tokens": group,
                "start": float(jump_times[i]),
                "end": float(jump_times[j]),
                "probability": float(np.mean(probs[i:j])) if j > i else 0.0,
            }
            for name, group, i, j in zip(names, groups, bounds[:-1], bounds[1:], strict=False)
        ]
        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
        return tuple(
            {
                "start": round(min(a["start"], duration_s), 3),
                "end": round(min(a["end"], duration_s), 3),
                "text": a["word"],
                "probability": round(a["probability"], 3),
            }
            for a in alignment
            if a["word"]
        )

    def _run_full(
        self, audio: np.ndarray, language: str | None, task: str, prompt: str | None, words: bool
    ) -> tuple[str, str, tuple[dict[str, Any], ...] | None]:
        """faster-whisper's own loop: language detection, or audio over one window."""
        segments, info = self._model.transcribe(
            audio,
            language=language,
            task=task,
            beam_size=1,
            condition_on_previous_text=False,
            initial_prompt=prompt.strip()[-PROMPT_CHARS:] if prompt and prompt.strip() else None,
            without_timestamps=True,
            word_timestamps=words,
            vad_filter=False,
        )
        kept = [
            seg
            for seg in segments
            if not _is_hallucination(seg.no_speech_prob, seg.avg_logprob, seg.compression_ratio)
        ]
        text = " ".join(t for seg in kept if (t := seg.text.strip())).strip()
        found = None
        if words:
            found = tuple(
                {
                    "start": round(float(w.start), 3),
                    "end": round(float(w.end), 3),
                    "text": w.word,
                    "probability": round(float(w.probability), 3),
                }
                for seg in kept
                for w in seg.words or ()
            )
        return text, info.language, found


def repeats(tokens: list[int] | tuple[int, ...], least: int = MIN_REPEAT_TOKENS) -> bool:
    """Whether a stretch of at least ``least`` tokens comes twice in a row (Whisper saying
    the sentence again, which two repetitions do not yet make compress well)."""
    tokens = list(tokens)
    n = len(tokens)
    for length in range(least, n // 2 + 1):
        for i in range(n - 2 * length + 1):
            if tokens[i : i + length] == tokens[i + length : i + 2 * length]:
                return True
    return False


def _segments(words: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """The words grouped into sentences: a piece ends after sentence-final punctuation."""
    out: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for i, word in enumerate(words):
        current.append(word)
        if word["text"].rstrip().endswith(SENTENCE_END) or i == len(words) - 1:
            out.append(
                {
                    "start": current[0]["start"],
                    "end": current[-1]["end"],
                    "text": "".join(w["text"] for w in current).strip(),
                }
            )
            current = []
    return tuple(out)


def _is_hallucination(no_speech_prob: float, avg_logprob: float, compression: float) -> bool:
    # Whisper invents text over noise and silence ("Thank you for watching"); text it is
    # itself unsure is speech, or that repeats itself, is dropped.
    return (no_speech_prob > 0.6 and avg_logprob < -0.8) or compression > 2.6


def cpu_count() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class PiperEngine:
    def __init__(self, voice_path: Path, out_rate: int) -> None:
        from piper import PiperVoice

        self._voice = PiperVoice.load(str(voice_path))
        self._in_rate = int(self._voice.config.sample_rate)
        self.out_rate = out_rate

    def synthesize(self, text: str, speed: float = 1.0) -> Iterator[bytes]:
        """PCM16 mono at ``out_rate``, one chunk per sentence as soon as it is ready.
        ``speed`` > 1 speaks faster (Piper's length scale, the voice's own divided by it)."""
        import soxr
        from piper import SynthesisConfig

        config = None
        if speed != 1.0:
            speed = min(max(speed, wire.TTS_SPEED_MIN), wire.TTS_SPEED_MAX)
            config = SynthesisConfig(length_scale=self._voice.config.length_scale / speed)
        for chunk in self._voice.synthesize(text, syn_config=config):
            audio = chunk.audio_int16_array
            if self._in_rate != self.out_rate:
                audio = soxr.resample(audio, self._in_rate, self.out_rate)
            yield np.asarray(audio, dtype=np.int16).tobytes()
