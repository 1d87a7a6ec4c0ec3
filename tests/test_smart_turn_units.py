"""Consecutive interpretation's end of turn (``pipeline.smart_turn``): the gate between the
VAD and the provider holds each short-silence stop for Smart Turn's verdict, against a
stand-in model; and the real model, loaded from the Pipecat wheel, judges a finished
sentence complete. No dragoman process."""

from __future__ import annotations

from typing import Any

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState
from pipecat.frames.frames import (
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from dragoman.pipeline.smart_turn import SmartTurnGate, SmartTurnModel, hold_s

SHORT_S, LONG_S = 0.2, 60.0  # a fallback that never comes within a test


class StandInModel:
    """Answers each call with the next probability; records the audio it was given."""

    def __init__(self, *probabilities: float) -> None:
        self.answers = list(probabilities)
        self.heard: list[int] = []

    def completion(self, pcm16_16k: bytes) -> float:
        self.heard.append(len(pcm16_16k))
        return self.answers.pop(0)


class StandInVAD(VADAnalyzer):
    def num_frames_required(self) -> int:
        return 512

    def voice_confidence(self, buffer: bytes) -> float:
        return 0.0


def gate(model: StandInModel, fallback_s: float = LONG_S, **kw: Any) -> SmartTurnGate:
    kw.setdefault("enabled", True)
    return SmartTurnGate(
        model, vad=None, stop_s=SHORT_S, fallback_s=fallback_s, threshold=0.5, **kw
    )


def audio(seconds: float) -> list[InputAudioRawFrame]:
    chunk = b"\x00\x01" * 640  # 40 ms at 16 kHz
    return [
        InputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
        for _ in range(int(seconds / 0.04))
    ]


def speech(seconds: float) -> list[Any]:
    """A VAD start, its audio, and the VAD's stop after the short silence."""
    return [
        VADUserStartedSpeakingFrame(),
        *audio(seconds),
        SleepFrame(0.05),  # the audio is in before the stop (system frames overtake it)
        VADUserStoppedSpeakingFrame(stop_secs=SHORT_S),
    ]


def vad_frames(frames: Any) -> list[str]:
    names = {VADUserStartedSpeakingFrame: "start", VADUserStoppedSpeakingFrame: "stop"}
    return [names[type(f)] for f in frames if type(f) in names]


async def test_a_complete_turn_is_released_on_the_models_word() -> None:
    model = StandInModel(0.9)
    g = gate(model)
    down, _ = await run_test(g, frames_to_send=[*speech(1.0), SleepFrame(0.3)])
    assert vad_frames(down) == ["start", "stop"]  # long before the 60 s fallback
    assert model.heard == [32000]  # the turn's second of audio (all there was before it)
    assert (g.released, g.swallowed) == (1, 0)


async def test_an_incomplete_turn_waits_for_the_fallback_silence() -> None:
    model = StandInModel(0.1)
    g = gate(model, fallback_s=SHORT_S + 0.1)
    down, _ = await run_test(g, frames_to_send=[*speech(1.0), SleepFrame(1.0)])
    assert vad_frames(down) == ["start", "stop"]
    assert (g.released, g.swallowed) == (0, 0)


async def test_an_incomplete_turn_is_held_while_silence_lasts() -> None:
    g = gate(StandInModel(0.1))
    down, _ = await run_test(g, frames_to_send=[*speech(1.0), SleepFrame(0.3)])
    assert vad_frames(down) == ["start"]


async def test_speech_resuming_before_the_verdict_keeps_one_turn() -> None:
    model = StandInModel(0.1, 0.9)
    g = gate(model)
    frames = [*speech(1.0), SleepFrame(0.2), *speech(0.6), SleepFrame(0.3)]
    down, _ = await run_test(g, frames_to_send=frames)
    # The pause's stop and the VAD's next start are swallowed: one utterance downstream.
    assert vad_frames(down) == ["start", "stop"]
    assert (g.released, g.swallowed) == (1, 1)
    assert model.heard[1] > model.heard[0]  # the second verdict saw the whole turn
    assert len([f for f in down if isinstance(f, InputAudioRawFrame)]) == 25 + 15


async def test_off_the_stop_passes_at_once_and_the_model_is_not_asked() -> None:
    model = StandInModel()
    down, _ = await run_test(gate(model, enabled=False), frames_to_send=speech(1.0))
    assert vad_frames(down) == ["start", "stop"] and model.heard == []


def test_switching_sets_the_vads_stop_and_keeps_its_state() -> None:
    vad = StandInVAD()
    vad.set_sample_rate(16000)
    g = SmartTurnGate(
        StandInModel(), vad=vad, stop_s=0.2, fallback_s=0.5, threshold=0.5, enabled=False
    )
    assert vad.params.stop_secs == 0.5
    vad._vad_state = VADState.SPEAKING  # mid-sentence when the page switches
    g.enabled = True
    assert vad.params.stop_secs == 0.2 and vad._vad_stop_frames == round(0.2 * 16000 / 512)
    assert vad._vad_state == VADState.SPEAKING  # its turn still gets its stop
    g.enabled = False
    assert vad.params.stop_secs == 0.5


def test_hold_is_what_is_left_of_the_fallback_silence() -> None:
    assert hold_s(0.2, 0.5) == 0.3
    assert hold_s(0.5, 0.5) == 0.0 and hold_s(0.7, 0.5) == 0.0


def test_the_real_model_judges_a_finished_sentence_complete() -> None:
    import soxr
    from piper import PiperVoice

    from dragoman.inference.models import resolve_piper

    voice = PiperVoice.load(str(resolve_piper(None)))

    def say(text: str) -> np.ndarray:
        pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
        return soxr.resample(pcm, int(voice.config.sample_rate), 16000).astype(np.int16)

    pause = np.zeros(int(0.2 * 16000), np.int16)  # the short silence the VAD stops after
    model = SmartTurnModel()
    finished = say("The museum opens at nine tomorrow morning, so let us meet at the station.")
    cut = say("The museum opens at nine tomorrow morning, so let us meet at the")
    p_finished = model.completion(np.concatenate([finished, pause]).tobytes())
    p_cut = model.completion(np.concatenate([cut, pause]).tobytes())
    assert p_finished >= 0.5, p_finished
    assert p_cut < p_finished, (p_cut, p_finished)
