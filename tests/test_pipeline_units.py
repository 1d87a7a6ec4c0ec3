"""The provider stages report in frames and one processor writes the page's messages: the
local provider (Whisper STT service → Piper TTS service) against fakes of the node's
inference service, and PageMessages' captions, state and errors. No dragoman process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    InputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from dragoman.config import Settings
from dragoman.inference.client import InferenceError
from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import (
    CallErrorFrame,
    InterimSourceTranscriptionFrame,
    NothingToSpeakFrame,
    SourceTranscriptionFrame,
    TranslatingFrame,
    TranslationFrame,
)
from dragoman.pipeline.page_messages import PageMessages
from dragoman.pipeline.providers import openai_translate
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.providers.local.piper_tts import PiperTTSService
from dragoman.pipeline.providers.local.whisper_stt import WhisperSTTService
from dragoman.pipeline.providers.streaming import ProviderEvent, StreamingInterpretation


class FakeWhisper:
    """A SpeechTranslator: Japanese or English in, English out."""

    def __init__(self, spoken: str = "ja") -> None:
        self.spoken = spoken

    async def identify(self, pcm16_16k: bytes, candidates: list[str]) -> str:
        assert self.spoken in candidates
        return self.spoken

    async def transcribe(self, pcm16_16k: bytes, language: str) -> str:
        return {"ja": "こんにちは", "en": "Hello there"}[language]

    def speaks(self, language: str) -> bool:
        return language == "en"

    async def translate(self, pcm16_16k: bytes, pair: LanguagePair) -> str:
        return "Hello"


class FakePiper:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.said: list[str] = []

    async def tts(self, text: str) -> AsyncIterator[tuple[bytes, int]]:
        if self.fail:
            raise InferenceError("the speech service is restarting")
        self.said.append(text)
        for _ in range(2):
            yield b"\x01\x00" * 2205, 22050


class Page:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.ended: list[str] = []

    def __call__(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    async def end(self, reason: str) -> None:
        self.ended.append(reason)

    def kinds(self) -> list[str]:
        out = []
        for m in self.sent:
            detail = m.get("state") or m.get("side") or m.get("code") or ""
            out.append(f"{m['type']}:{detail}" if detail else m["type"])
        return out


def audio(seconds: float) -> list[InputAudioRawFrame]:
    chunk = b"\x00\x01" * 320  # 20 ms at 16 kHz
    return [
        InputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
        for _ in range(int(seconds / 0.02))
    ]


def utterance(seconds: float = 1.0) -> list[Any]:
    return [VADUserStartedSpeakingFrame(), *audio(seconds), VADUserStoppedSpeakingFrame()]


def local(
    pair: LanguagePair, whisper: FakeWhisper, piper: FakePiper, page: Page, partials_s: float = 0
) -> Pipeline:
    stt = WhisperSTTService(
        translator=whisper,
        pair=pair,
        max_utterance_s=15,
        min_utterance_s=0.3,
        partial_interval_s=partials_s,
    )
    return Pipeline([stt, PiperTTSService(client=piper), PageMessages(page, page.end)])


async def test_local_caption_before_speech_then_metrics_and_listening() -> None:
    page, piper = Page(), FakePiper()
    await run_test(
        local(LanguagePair("ja", "en"), FakeWhisper(), piper, page),
        frames_to_send=[*utterance(), SleepFrame(0.5), BotStoppedSpeakingFrame()],
    )
    assert piper.said == ["Hello"]
    assert page.kinds() == [
        "state:translating",
        "caption:translation",
        "caption:source",
        "state:speaking",
        "metrics",
        "state:listening",
    ]
    translation, source = page.sent[1], page.sent[2]
    assert (translation["id"], translation["lang"], translation["text"]) == ("u1", "en", "Hello")
    assert (source["id"], source["lang"], source["final"]) == ("u1", "ja", True)
    assert source["t_end_ms"] >= source["t_start_ms"]
    marks = page.sent[4]["marks"]
    for mark in ("vad_stop", "translated", "tts_start", "tts_first_chunk", "first_audio_out"):
        assert mark in marks, mark


async def test_conversation_english_gets_its_caption_and_a_note_not_a_translation() -> None:
    page, piper = Page(), FakePiper()
    await run_test(
        local(LanguagePair("ja", "en", conversation=True), FakeWhisper("en"), piper, page),
        frames_to_send=[*utterance(), SleepFrame(0.3)],
    )
    assert piper.said == []
    assert page.kinds() == [
        "state:translating",
        "caption:source",
        "note:needs_cloud_provider",
        "state:listening",
    ]
    assert page.sent[1]["lang"] == "en" and page.sent[1]["text"] == "Hello there"


class UnsureWhisper(FakeWhisper):
    """Told the wrong source language: the partial decode has text, the final one is dropped
    by the hallucination filter (empty), the translation comes through (after ``delay_s``:
    0 puts the source caption after the speech, >0 before it, the early-source path)."""

    def __init__(self, translation: str = "Hello", delay_s: float = 0.0) -> None:
        super().__init__("zh")
        self.translation, self.delay_s = translation, delay_s
        self.transcribed = 0

    async def transcribe(self, pcm16_16k: bytes, language: str) -> str:
        self.transcribed += 1
        return "你好" if self.transcribed == 1 else ""

    async def translate(self, pcm16_16k: bytes, pair: LanguagePair) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.translation


def finals(page: Page, side: str) -> list[str]:
    return [m["text"] for m in page.sent if m["type"] == "caption" and m["side"] == side]


@pytest.mark.parametrize("delay_s", [0.0, 0.05])
async def test_an_empty_final_transcription_keeps_the_partial_caption(delay_s: float) -> None:
    page, whisper = Page(), UnsureWhisper(delay_s=delay_s)
    frames = [VADUserStartedSpeakingFrame(), *audio(1.0), SleepFrame(0.3)]
    await run_test(
        local(LanguagePair("zh", "en"), whisper, FakePiper(), page, partials_s=0.1),
        frames_to_send=[*frames, VADUserStoppedSpeakingFrame(), SleepFrame(0.5)],
    )
    assert whisper.transcribed >= 2  # a partial, then the final decode
    source = [m for m in page.sent if m["type"] == "caption" and m["side"] == "source"]
    assert [(m["final"], m["text"]) for m in source] == [(False, "你好"), (True, "你好")]
    assert finals(page, "translation") == ["Hello"]


async def test_an_utterance_that_came_to_nothing_withdraws_its_partial() -> None:
    page = Page()
    frames = [VADUserStartedSpeakingFrame(), *audio(1.0), SleepFrame(0.3)]
    await run_test(
        local(LanguagePair("zh", "en"), UnsureWhisper(""), FakePiper(), page, partials_s=0.1),
        frames_to_send=[*frames, VADUserStoppedSpeakingFrame(), SleepFrame(0.3)],
    )
    assert finals(page, "source") == ["你好", ""]  # a cough Whisper heard as words
    assert page.kinds()[-1] == "state:listening"


async def test_speech_synthesis_down_is_inference_unavailable() -> None:
    page = Page()
    await run_test(
        local(LanguagePair("ja", "en"), FakeWhisper(), FakePiper(fail=True), page),
        frames_to_send=[*utterance(), SleepFrame(0.5)],
    )
    errors = [m for m in page.sent if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["inference_unavailable"]
    assert page.kinds()[-1] == "state:listening"  # its TTS context closed with no audio


async def test_a_blip_is_not_translated() -> None:
    page = Page()
    await run_test(
        local(LanguagePair("ja", "en"), FakeWhisper(), FakePiper(), page),
        frames_to_send=[*utterance(0.1), SleepFrame(0.2)],
    )
    assert page.sent == []


async def test_page_messages_state_follows_speech_and_fatal_errors_end_the_call() -> None:
    page = Page()
    tts_audio = TTSAudioRawFrame(audio=b"\0\0" * 240, sample_rate=24000, num_channels=1)
    frames = [
        InterimSourceTranscriptionFrame(
            text="hel", user_id="", timestamp="", language="en", utterance_id="s1"
        ),
        TranslationFrame(text="Bon", language="fr", utterance_id="s1", final=False),
        TTSStartedFrame(),
        tts_audio,
        BotStoppedSpeakingFrame(),  # played out, but the turn goes on: still speaking
        TTSStoppedFrame(),  # now over, and quiet: listening
        SourceTranscriptionFrame(
            text="hello", user_id="", timestamp="", language="en", utterance_id="s1"
        ),
        TranslatingFrame(utterance_id="c1"),
        NothingToSpeakFrame(utterance_id="c1"),
        CallErrorFrame(code="provider_refused", detail="401", fatal=True, end_reason="x"),
    ]
    # System and data frames travel apart: one at a time, as they would come in a call.
    await run_test(
        PageMessages(page, page.end),
        frames_to_send=[x for f in frames for x in (f, SleepFrame(0.02))],
        expected_down_frames=[
            TTSStartedFrame,
            TTSAudioRawFrame,
            BotStoppedSpeakingFrame,
            TTSStoppedFrame,
        ],
    )
    assert page.kinds() == [
        "caption:source",
        "caption:translation",
        "state:speaking",
        "state:listening",
        "caption:source",
        "state:translating",
        "state:listening",
        "error:provider_refused",
    ]
    assert page.sent[0]["final"] is False and page.sent[4]["final"] is True
    assert page.sent[-1]["fatal"] and page.ended == ["x"]


async def test_a_streaming_provider_frames_its_speech_as_a_tts_turn() -> None:
    s = Settings(openai_api_key="k", openai_base_url="http://h:1/v1")
    stage = StreamingInterpretation(
        CallContext(pair=LanguagePair("ja", "en"), settings=s),
        openai_translate.OpenAITranslate(s),
    )
    pushed: list[Any] = []

    async def push(frame: Any, direction: Any = None) -> None:
        pushed.append(frame)

    stage.push_frame = push  # type: ignore[method-assign]
    for _ in range(2):
        await stage._on_event(ProviderEvent("audio", audio=b"\0\0" * 240, rate=24000))
    await stage._on_event(ProviderEvent("source_text", text="こんにちは"))
    await stage._caption("source", stage._source.close())
    assert [type(f) for f in pushed] == [
        TTSStartedFrame,
        TTSAudioRawFrame,
        TTSAudioRawFrame,
        SourceTranscriptionFrame,
    ]
    line = pushed[-1]
    assert (line.utterance_id, line.language, line.text) == ("s1", "ja", "こんにちは")
