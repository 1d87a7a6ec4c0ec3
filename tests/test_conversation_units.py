"""Conversation and room policy as units: the echo gate's frame handling and which modes
and pairs each provider accepts."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import run_test

from dragoman.languages import LanguageError, LanguagePair
from dragoman.pipeline.echo_gate import EchoGate
from dragoman.pipeline.providers.catalog import PROVIDERS, validate_for_mode
from dragoman.worker.calls.rooms import Rooms, for_peer


def audio() -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=b"\0\0" * 640, sample_rate=16000, num_channels=1)


SEQUENCE = [
    audio(),  # open: passes
    BotStartedSpeakingFrame(),
    VADUserStartedSpeakingFrame(),  # the agent's own voice: swallowed
    audio(),  # dropped
    BotStoppedSpeakingFrame(),
    audio(),  # the gate opens while the VAD still hears speech: a start, then the audio
    VADUserStoppedSpeakingFrame(),
]


async def test_the_echo_gate_swallows_speech_starts_while_the_agent_speaks() -> None:
    gate = EchoGate(tail_s=0.0)
    down, _ = await run_test(
        gate,
        frames_to_send=SEQUENCE,
        expected_down_frames=[
            InputAudioRawFrame,
            BotStartedSpeakingFrame,
            BotStoppedSpeakingFrame,
            VADUserStartedSpeakingFrame,
            InputAudioRawFrame,
            VADUserStoppedSpeakingFrame,
        ],
    )
    assert gate.ignored_starts == 1


async def test_a_disabled_echo_gate_passes_everything() -> None:
    await run_test(
        EchoGate(tail_s=0.0, enabled=False),
        frames_to_send=SEQUENCE,
        expected_down_frames=[type(f) for f in SEQUENCE],
    )


async def test_someone_already_speaking_is_never_cut() -> None:
    await run_test(
        EchoGate(tail_s=10.0),
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            BotStartedSpeakingFrame(),
            audio(),
            VADUserStoppedSpeakingFrame(),
        ],
        expected_down_frames=[
            VADUserStartedSpeakingFrame,
            BotStartedSpeakingFrame,
            InputAudioRawFrame,
            VADUserStoppedSpeakingFrame,
        ],
    )


@pytest.mark.parametrize(
    ("provider", "source", "target", "mode", "error"),
    [
        ("local", "ja", "en", "conversation", None),
        ("local", "en", "ko", "conversation", None),  # English on one side is enough
        ("local", "ja", "ko", "conversation", "unsupported_pair"),
        ("openai-cascade", "ja", "ko", "conversation", None),
        ("openai-translate", "ja", "en", "conversation", "mode_unsupported"),
        ("gemini-live-translate", "ja", "en", "conversation", "mode_unsupported"),
        ("local", "en", "ja", "room", None),  # a direction it cannot speak gets notes
        ("openai-translate", "en", "ar", "room", "unsupported_pair"),  # no notes there
        ("local", "ja", "ja", "conversation", "same_language"),
        ("local", "ja", "en", "duet", "bad_mode"),
    ],
)
def test_modes_per_provider(
    provider: str, source: str, target: str, mode: str, error: str | None
) -> None:
    spec = PROVIDERS[provider]
    if error is None:
        pair = validate_for_mode(spec, source, target, mode)
        assert pair.mode == mode and pair.other(source) == target
    else:
        with pytest.raises(LanguageError) as info:
            validate_for_mode(spec, source, target, mode)
        assert info.value.code == error and info.value.message


def test_rooms_share_captions_and_notes_with_the_peer_only() -> None:
    rooms = Rooms()
    rooms.link("guest", "host")
    assert rooms.peer("host") == "guest" and rooms.peer("guest") == "host"
    caption = {"v": 1, "type": "caption", "id": "u1", "side": "source", "text": "hi"}
    shared = for_peer(caption)
    assert shared is not None and shared["id"] == "peer-u1" and shared["from"] == "peer"
    assert caption["id"] == "u1"  # the caller's own copy is untouched
    assert for_peer({"v": 1, "type": "state", "state": "speaking"}) is None
    assert rooms.unlink("guest") == "host" and rooms.peer("host") is None
    assert rooms.unlink("host") is None
    assert LanguagePair("ja", "en", room=True).mode == "room"
