"""openai-cascade's simultaneous mode, piece by piece: the commit policy over a streamed
transcript, the pace policy, the transcription session our SDK config produces, the mapping
of the SDK's events, and the LLM request's context. Pure, or in-process against the fake's
app on a loopback port; no dragoman process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import websockets
from aiohttp.test_utils import TestServer
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    RealtimeError,
    RealtimeErrorEvent,
)
from pipecat.frames.frames import Frame, TTSUpdateSettingsFrame

from dragoman.config import Settings
from dragoman.fakes.server import build_app
from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import SpeakTranslationFrame
from dragoman.pipeline.providers import cascade_stream
from dragoman.pipeline.providers.base import CallContext
from dragoman.pipeline.providers.cascade_policy import (
    CommitPolicy,
    ItemText,
    Pace,
    PacePolicy,
    SpeechClock,
    backlog_s,
    next_cut,
    pace_for,
    remainder,
)
from dragoman.pipeline.providers.cascade_simultaneous import Simultaneous, Spoken

POLICY = CommitPolicy(min_words=3, max_words=8, max_wait_s=2.0)


def cut(pending: str, waited_s: float = 0.0) -> str:
    return pending[: next_cut(pending, waited_s, POLICY)]


# --- commit -----------------------------------------------------------------------------
def test_a_clause_boundary_commits_once_it_closes_enough_words() -> None:
    assert cut("Yes, I") == ""  # one word before the comma: too short a piece
    assert cut("Well, I think that") == ""  # still one word before the only boundary
    assert cut("I think so, but") == "I think so,"
    # The last boundary wins: everything speakable goes at once.
    assert cut("I came here. I saw it, and") == "I came here. I saw it,"
    # Punctuation not followed by a space may still grow ("3." → "3.5").
    assert cut("the rate is 3.") == ""
    assert cut("the rate is 3.5 percent. Next") == "the rate is 3.5 percent."


def test_without_a_boundary_words_are_committed_by_count_or_age_never_half_spelt() -> None:
    assert cut("one two three four five six seven eig") == ""  # 7 complete words
    assert cut("one two three four five six seven eight nin") == (
        "one two three four five six seven eight"
    )
    assert cut("one two thr", waited_s=1.9) == ""
    assert cut("one two thr", waited_s=2.0) == "one two"  # "thr" may still be growing
    assert cut("one two ", waited_s=2.0) == "one two "
    assert cut("supercalifragi", waited_s=9.0) == ""  # a lone word is never cut


def test_text_without_spaces_is_cut_at_its_own_punctuation_or_whole() -> None:
    assert cut("はい、") == ""  # 2 characters: shorter than a 3-word piece
    assert cut("ゲートウェイの設定は、次に") == "ゲートウェイの設定は、"
    assert cut("今日は") == ""
    assert cut("今日は", waited_s=2.0) == "今日は"  # its deltas come in whole characters
    assert cut("本日の会議の議題についてご説明") == ""  # 15 characters: under 8 "words"
    assert cut("本日の会議の議題についてご説明します") == "本日の会議の議題についてご説明します"


def test_what_is_left_when_the_transcription_completes() -> None:
    assert remainder("I think so,", "I think so, but not today.") == "but not today."
    assert remainder("", "Hello there.") == "Hello there."
    # The final text revised a committed word: the committed ones are skipped by count.
    assert remainder("I thing so,", "I think so, but not today.") == "but not today."
    assert remainder("今日は", "今日はいい天気です。") == "いい天気です。"


def test_an_item_hands_out_pieces_then_its_rest() -> None:
    item = ItemText("i1", t_start_ms=100)
    for n, delta in enumerate(["word1", " word2", " word3", " word4,", " word5"]):
        item.add(delta, now=float(n), now_ms=100 + n)
    assert item.take(POLICY, now=4.0) == "word1 word2 word3 word4,"
    assert item.take(POLICY, now=4.0) == ""  # "word5" alone, not waited long
    assert item.take(POLICY, now=6.5) == ""  # a single (maybe unfinished) word
    item.add(" word6", now=7.0, now_ms=107)
    assert item.take(POLICY, now=7.0) == "word5"  # waiting since 4.0: due
    assert item.finish("word1 word2 word3 word4, word5 word6 word7.", now_ms=200) == (
        "word6 word7."
    )
    assert item.completed and item.rest == "word6 word7." and item.t_end_ms == 200


# --- pace -------------------------------------------------------------------------------
PACE = PacePolicy(faster_after_s=3.0, join_after_s=6.0, max_speed=1.3, chars_per_s=10.0)


def test_pace_is_normal_then_faster_then_joined() -> None:
    assert pace_for(0.0, PACE) == Pace(1.0, False)
    assert pace_for(3.0, PACE) == Pace(1.0, False)
    middle = pace_for(4.5, PACE)
    assert 1.0 < middle.speed < 1.3 and not middle.join
    assert pace_for(6.0, PACE) == Pace(1.3, False)
    assert pace_for(6.1, PACE) == Pace(1.3, True)
    assert pace_for(60.0, PACE) == Pace(1.3, True)  # never past the fastest speed
    speeds = [pace_for(b / 4, PACE).speed for b in range(40)]
    assert speeds == sorted(speeds)


def test_the_backlog_counts_queued_speech_and_waiting_text() -> None:
    clock = SpeechClock()
    clock.add(2.0, now=10.0)
    clock.add(1.0, now=10.5)  # queued behind the first: heard by 13.0
    assert clock.ahead(10.0) == 3.0 and clock.ahead(12.0) == 1.0 and clock.ahead(20.0) == 0.0
    clock.add(1.0, now=20.0)  # after a silence, it starts when it is made
    assert clock.ahead(20.0) == 1.0
    assert backlog_s(1.0, waiting_chars=45, policy=PACE) == 5.5


# --- the session, the events, the request ---------------------------------------------------
def test_the_transcription_session_streams_24k_pcm_and_leaves_turns_to_us() -> None:
    s = Settings(openai_api_key="k")
    session = cascade_stream.transcription_session(s, LanguagePair("ja", "de"))
    audio = session["audio"]["input"]
    assert session["type"] == "transcription"
    assert audio["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["turn_detection"] is None  # our VAD commits
    assert audio["transcription"] == {
        "model": "gpt-realtime-whisper",
        "language": "ja",
        "delay": "low",
    }
    other = Settings(openai_api_key="k", openai_stream_transcription_model="gpt-4o-transcribe")
    assert (
        "delay"
        not in cascade_stream.transcription_session(other, LanguagePair("ja", "de"))["audio"][
            "input"
        ]["transcription"]
    )


def test_the_sdk_events_map_onto_ours() -> None:
    delta = ConversationItemInputAudioTranscriptionDeltaEvent(
        type="conversation.item.input_audio_transcription.delta",
        event_id="e1",
        item_id="it1",
        delta=" word",
    )
    done = ConversationItemInputAudioTranscriptionCompletedEvent.model_validate(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": "e2",
            "item_id": "it1",
            "content_index": 0,
            "transcript": "a word",
            "usage": {"type": "duration", "seconds": 1.0},
        }
    )
    [d] = cascade_stream.events_of(delta)
    [c] = cascade_stream.events_of(done)
    assert (d.kind, d.item, d.text) == ("delta", "it1", " word")
    assert (c.kind, c.item, c.text) == ("completed", "it1", "a word")
    for code, fatal in (("invalid_api_key", True), ("input_audio_buffer_commit_empty", False)):
        err = RealtimeErrorEvent(
            type="error", event_id="e3", error=RealtimeError(type="x", code=code, message="m")
        )
        [e] = cascade_stream.events_of(err)
        assert e.kind == "error" and e.code == code and e.fatal is fatal


def test_each_piece_is_translated_with_the_previous_ones_as_context() -> None:
    s = Settings(openai_api_key="k", cascade_context_segments=2)
    ctx = CallContext(pair=LanguagePair("ja", "de"), settings=s, glossary="a = b")
    stage = Simultaneous(ctx, client=None, stream=None, active=True)  # type: ignore[arg-type]
    first = stage.messages_for("one")
    assert [m["role"] for m in first] == ["system", "user"]
    assert "from Japanese into German" in first[0]["content"] and "a = b" in first[0]["content"]
    assert s.cascade_segment_prompt in first[0]["content"]
    for said, given in (("one", "eins"), ("two", "zwei"), ("three", "drei")):
        stage._context.append((said, given))
    later = stage.messages_for("four")
    assert [(m["role"], m["content"]) for m in later[1:]] == [
        ("user", "two"),
        ("assistant", "zwei"),
        ("user", "three"),
        ("assistant", "drei"),
        ("user", "four"),
    ]


# --- the fake accepts what the SDK's models accept ------------------------------------------
@pytest.fixture
async def fake_url() -> AsyncIterator[str]:
    server = TestServer(build_app("sk-unit", "gm-unit"), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_transcription_fake_refuses_what_the_sdk_models_refuse(fake_url: str) -> None:
    url = fake_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer sk-unit"}
    ) as ws:
        assert json.loads(await ws.recv())["session"]["type"] == "transcription"
        for bad in (
            {"type": "session.update", "session": {"type": "transcription", "audoi": {}}},
            {"type": "session.update", "session": {"type": "realtime"}},  # not transcription
            {"type": "input_audio_buffer.append"},  # no audio
            {"type": "session.input_audio_buffer.append", "audio": ""},  # translation's name
        ):
            await ws.send(json.dumps(bad))
            err = json.loads(await ws.recv())
            assert err["type"] == "error" and err["error"]["code"] == "invalid_event", bad
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        err = json.loads(await ws.recv())
        assert err["error"]["code"] == "input_audio_buffer_commit_empty"
        session = cascade_stream.transcription_session(
            Settings(openai_api_key="k"), LanguagePair("ja", "de")
        )
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        updated = json.loads(await ws.recv())
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "ja"


async def test_a_backlog_is_spoken_faster_and_waiting_pieces_are_joined() -> None:
    """The speaker's wiring of the pace policy: with speech queued ahead and pieces waiting,
    the next request asks for a faster voice and takes every waiting piece at once."""
    s = Settings(
        openai_api_key="k",
        cascade_speech_lead_s=10.0,  # send at once: this test is about what is sent
        cascade_faster_after_s=3.0,
        cascade_join_after_s=6.0,
        cascade_max_speed=1.3,
        cascade_chars_per_s=10.0,
    )
    ctx = CallContext(pair=LanguagePair("ja", "de"), settings=s)
    stage = Simultaneous(ctx, client=None, stream=None, active=True)  # type: ignore[arg-type]
    pushed: list[Frame] = []
    sent = asyncio.Event()

    async def push(frame: Frame, direction: object = None) -> None:
        pushed.append(frame)
        if isinstance(frame, SpeakTranslationFrame):
            sent.set()

    stage.push_frame = push  # type: ignore[method-assign]
    stage.tts_audio(5.0)  # 5 s of speech queued ahead of the caller's ear
    for n in range(3):  # + 3 s of waiting text: a backlog of 8 s
        stage._to_speak.append(Spoken("i1", f"piece number {n}.", {}))
    stage._wake_speaker.set()
    task = asyncio.create_task(stage._speak_loop())
    try:
        await asyncio.wait_for(sent.wait(), 5)
    finally:
        task.cancel()
    [update, speak] = pushed
    assert isinstance(update, TTSUpdateSettingsFrame) and update.delta.speed == 1.3
    assert isinstance(speak, SpeakTranslationFrame)
    assert speak.text == "piece number 0. piece number 1. piece number 2."
    assert not stage._to_speak
