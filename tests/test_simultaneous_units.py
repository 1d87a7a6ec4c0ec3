"""Simultaneous mode without a server: the LocalAgreement commit policy (property tests),
the buffer's cut, speakable pieces and pace, the own-voice guard, and the STT service over a
stand-in decoder (words committed and spoken while the speaker is still talking)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pipecat.frames.frames import (
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from dragoman.languages import LanguagePair
from dragoman.pipeline.frames import (
    InterimSourceTranscriptionFrame,
    SourceTranscriptionFrame,
    SpeakTranslationFrame,
    TranslationFrame,
)
from dragoman.pipeline.providers.local.simultaneous import own_voice
from dragoman.pipeline.providers.local.simultaneous.agreement import (
    Agreement,
    CutRule,
    TimedWord,
    after_cut,
    agree,
    cut_point,
    fresh_words,
    norm,
    paused_after,
)
from dragoman.pipeline.providers.local.simultaneous.pace import (
    PaceRule,
    SpeechBacklog,
    should_join,
    speed_for,
)
from dragoman.pipeline.providers.local.simultaneous.stt_service import SimultaneousWhisperSTT

FORCE = 3.0
VOCAB = ["the", "students", "study", "quietly", "in", "library", "station", "seven", "bakery"]


def truth_words(n: int) -> list[TimedWord]:
    """A talk: word i spoken from 0.4 i to 0.4 i + 0.3 s; every fifth ends a sentence."""
    out = []
    for i in range(n):
        text = " " + VOCAB[i % len(VOCAB)] + ("." if i % 5 == 4 else "")
        out.append(TimedWord(0.4 * i, 0.4 * i + 0.3, text))
    return out


@st.composite
def decode_runs(draw: Any) -> tuple[list[TimedWord], list[tuple[float, tuple[TimedWord, ...]]]]:
    """A talk and the hypotheses of successive decodes: each covers the audio heard by
    then, with its last few words possibly wrong (a decoder unsure of the newest audio)."""
    words = truth_words(draw(st.integers(5, 30)))
    steps = []
    t = 0.0
    for _ in range(draw(st.integers(2, 25))):
        t += draw(st.sampled_from([0.5, 1.0, 1.5]))
        heard = [w for w in words if w.end <= t]
        wrong = draw(st.integers(0, min(3, len(heard))))
        hyp = list(heard)
        for k in range(len(hyp) - wrong, len(hyp)):
            if draw(st.booleans()):
                hyp[k] = TimedWord(hyp[k].start, hyp[k].end, " " + draw(st.sampled_from(VOCAB)))
        if draw(st.booleans()) and hyp:
            hyp = hyp[: -draw(st.integers(1, len(hyp)))]  # a short hypothesis
        steps.append((t, tuple(hyp)))
    return words, steps


@settings(max_examples=300, deadline=None)
@given(decode_runs(), st.sampled_from([None, 0.05, 0.25]))
def test_committed_words_are_never_withdrawn_and_each_was_agreed_settled_or_forced(
    run: Any, pause_s: float | None
) -> None:
    _words, steps = run
    state = Agreement()
    said: list[str] = []
    for now, hyp in steps:
        before = state
        step = agree(state, hyp, now, FORCE, pause_s=pause_s)
        # Append-only: what was committed stays, in order.
        assert step.state.committed[: len(before.committed)] == before.committed
        assert step.state.committed[len(before.committed) :] == step.new
        # Each agreed word is the previous hypothesis's word at the same place.
        for i, w in enumerate(step.agreed):
            assert norm(w.text) == norm(before.tail[i].text)
        # Each forced word's audio began more than the bound ago.
        for w in step.forced:
            assert now - w.start > FORCE
        # Settled words end where the speaker paused in this hypothesis.
        if step.settled:
            assert pause_s is not None
            after = step.settled + step.forced + step.tail
            assert paused_after(after, len(step.settled) - 1, now, pause_s)
        said.extend(norm(w.text) for w in step.new)
        state = step.state
    # A final decode commits everything it still holds, nothing twice.
    last_now, last_hyp = steps[-1]
    final = agree(state, last_hyp, last_now, FORCE, final=True)
    assert final.tail == ()


@settings(max_examples=300, deadline=None)
@given(decode_runs(), st.floats(0.5, 20.0))
def test_a_cut_never_drops_uncommitted_speech(run: Any, max_buffer_s: float) -> None:
    _words, steps = run
    state, start = Agreement(), 0.0
    for now, hyp in steps:
        hyp = tuple(w for w in hyp if w.start >= start)
        state = agree(state, hyp, now, FORCE).state
        at = cut_point(state.committed, state.tail, start, now, CutRule(max_buffer_s=max_buffer_s))
        if at is None:
            continue
        assert start + 0.3 <= at  # never a unit too short to say anything
        # Never past the end of a committed word: the uncommitted tail keeps its audio.
        assert any(abs(at - w.end) < 1e-9 for w in state.committed)
        assert all(w.start >= at - 1e-9 for w in state.tail)
        state, start = after_cut(state, at), at


def test_stable_hypotheses_commit_on_the_second_decode_and_a_cut_follows_the_sentence() -> None:
    words = truth_words(7)
    first = agree(Agreement(), tuple(words[:3]), 1.2, FORCE)
    assert first.new == ()  # one hypothesis agrees with nothing yet
    second = agree(first.state, tuple(words[:5]), 2.0, FORCE)
    assert [w.text for w in second.agreed] == [w.text for w in words[:3]]
    third = agree(second.state, tuple(words[:7]), 2.8, FORCE)
    assert [w.text for w in third.agreed] == [w.text for w in words[3:5]]
    at = cut_point(third.state.committed, third.tail, 0.0, 2.8, CutRule())
    assert at == words[4].end  # " quietly." ends the sentence
    kept = after_cut(third.state, at)
    assert kept.committed == ()
    # The next decode (of the audio after the cut) starts past the committed words.
    assert fresh_words(tuple(words[5:7]), kept.committed, kept.last_end) == tuple(words[5:7])


def test_a_committed_word_repeated_by_a_later_decode_is_not_committed_again() -> None:
    w = truth_words(4)
    state = Agreement(committed=(w[0], w[1]), tail=(), last_end=w[1].end)
    late = TimedWord(w[1].start + 0.15, w[1].end + 0.1, w[1].text)  # timed a little late
    hyp = (TimedWord(0.0, 0.3, " a"), late, w[2], w[3])
    assert fresh_words(hyp, state.committed, state.last_end) == (w[2], w[3])


def test_an_old_undecided_word_is_forced() -> None:
    a, b = TimedWord(0.0, 0.4, " Hello"), TimedWord(0.5, 0.9, " world")
    s1 = agree(Agreement(), (a, b), 1.0, FORCE)
    s2 = agree(s1.state, (TimedWord(0, 0.4, " Hi"), b), 4.0, FORCE)
    assert [w.text for w in s2.forced] == [" Hi", " world"]


@given(st.floats(-5, 60), st.floats(-5, 60))
def test_the_voice_speeds_up_with_the_lag_and_stays_bounded(a: float, b: float) -> None:
    rule = PaceRule()
    lo, hi = sorted((a, b))
    assert 1.0 <= speed_for(lo, rule) <= speed_for(hi, rule) <= rule.max_speed
    assert speed_for(rule.relaxed_lag_s, rule) == 1.0
    assert speed_for(rule.full_speed_lag_s + 1, rule) == rule.max_speed
    assert should_join(rule.join_backlog, rule) and not should_join(rule.join_backlog - 1, rule)


def test_own_voice_is_dropped_only_while_heard_and_when_it_repeats_what_was_said() -> None:
    said = [
        ["I", "drink", "coffee", "three", "times", "a", "day."],
        ["The", "new", "bakery", "near", "the", "station", "opens", "at", "seven."],
    ]
    assert own_voice.repeats_said(["the", "bakery", "near", "the", "station."], said)
    assert not own_voice.repeats_said(["students", "study", "quietly"], said)
    # Sharing short words with everything said is no echo.
    assert not own_voice.repeats_said(["the", "plane", "lands", "at", "four", "in", "the"], said)
    assert not own_voice.repeats_said(["seven."], said)  # one word decides nothing
    assert own_voice.overlaps_voice(3.0, 4.0, [(1.0, 3.5)])
    assert own_voice.overlaps_voice(4.2, 5.0, [(1.0, 3.5)])  # within the echo tail
    assert not own_voice.overlaps_voice(6.0, 7.0, [(1.0, 3.5)])


# --- the service over a stand-in decoder ---------------------------------------------------
class ScriptedDecoder:
    """Whisper as a script: a talk's source words, each heard once its audio is in the
    buffer (the buffer's start is learnt from what the service cut), and each unit
    translated as "EN(<its source words>)"."""

    def __init__(self, words: list[TimedWord]) -> None:
        self.words = words
        self.offset = 0.0  # audio clock of the buffer's start
        self.calls: list[tuple[float, bool]] = []
        self.translated: list[str] = []

    async def transcribe(
        self, pcm16_16k: bytes, language: str, prompt: str, final: bool
    ) -> tuple[TimedWord, ...]:
        await asyncio.sleep(0.01)
        dur = len(pcm16_16k) / 32000
        self.calls.append((dur, final))
        lo, hi = self.offset, self.offset + dur
        return tuple(
            TimedWord(w.start - lo, w.end - lo, w.text)
            for w in self.words
            if w.start >= lo - 0.05 and w.end <= hi
        )

    async def translate(self, pcm16_16k: bytes, language: str, prompt: str) -> str:
        await asyncio.sleep(0.01)
        dur = len(pcm16_16k) / 32000 - 0.3  # less the service's padding
        lo, hi = self.offset, self.offset + dur
        said = [w.text.strip() for w in self.words if w.start >= lo - 0.05 and w.end <= hi + 0.05]
        self.offset = hi
        text = f"EN({' '.join(said)})"
        self.translated.append(text)
        return text


def frames_of(seconds: float) -> list[InputAudioRawFrame]:
    chunk = bytes(640)  # 20 ms at 16 kHz
    return [
        InputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
        for _ in range(int(seconds / 0.02))
    ]


async def test_sentences_are_translated_and_spoken_while_the_speaker_is_still_talking() -> None:
    # Three sentences of three words each over 3.6 s, no pause the VAD would hear.
    words = [
        TimedWord(0.4 * i + 0.1, 0.4 * i + 0.4, f" w{i}" + ("." if i % 3 == 2 else ""))
        for i in range(9)
    ]
    decoder = ScriptedDecoder(words)
    stt = SimultaneousWhisperSTT(
        decoder=decoder, pair=LanguagePair("ja", "en"), backlog=SpeechBacklog(), step_s=0.3
    )
    talk: list[Any] = [VADUserStartedSpeakingFrame()]
    for _ in range(10):  # audio in real time, so the step loop runs between frames
        talk += [*frames_of(0.4), SleepFrame(sleep=0.4)]
    talk += [VADUserStoppedSpeakingFrame(), SleepFrame(sleep=0.6)]
    down, _up = await run_test(stt, frames_to_send=talk, expected_down_frames=None)
    stop = next(i for i, f in enumerate(down) if isinstance(f, VADUserStoppedSpeakingFrame))
    speak = [f for f in down if isinstance(f, SpeakTranslationFrame)]
    # Each sentence is a unit, translated from exactly its words, in order, once.
    assert [f.text for f in speak] == ["EN(w0 w1 w2.)", "EN(w3 w4 w5.)", "EN(w6 w7 w8.)"]
    # The first two went out while the speaker was still talking.
    assert all(down.index(f) < stop for f in speak[:2])
    # Each translation's caption comes before its voice, with the unit's source times.
    for f in speak:
        caption = next(c for c in down if isinstance(c, TranslationFrame) and c.text == f.text)
        assert down.index(caption) < down.index(f)
        assert caption.final and caption.t_end_ms > caption.t_start_ms
    # Source captions: partials say how much is committed; finals are the units' words.
    partials = [f for f in down if isinstance(f, InterimSourceTranscriptionFrame)]
    assert partials and all(0 <= (f.stable or 0) <= len(f.text) for f in partials)
    finals = [f.text for f in down if isinstance(f, SourceTranscriptionFrame)]
    assert finals == ["w0 w1 w2.", "w3 w4 w5.", "w6 w7 w8."]
    # Every step but the last was a partial decode.
    assert [final for _dur, final in decoder.calls].count(True) == 1
