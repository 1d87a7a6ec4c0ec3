"""Push-to-talk and "interpret now" (pipeline.talk): the cutter's policy, and both processors
in a pipeline between a fake VAD's frames and what a provider stage receives."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from dragoman.pipeline.talk import (
    CutterState,
    Talk,
    TalkFrame,
    on_interpret_now,
    on_talk,
    on_vad,
)

START, STOP = VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame


def test_open_microphone_passes_the_vad_through() -> None:
    frames, s = on_vad(CutterState(), True)
    assert frames == [START] and s.open and s.vad_speaking
    frames, s = on_vad(s, False)
    assert frames == [STOP] and not s.open


def test_interpret_now_ends_the_utterance_and_the_talker_goes_on() -> None:
    _, talking = on_vad(CutterState(), True)
    frames, s = on_interpret_now(talking)
    assert frames == [STOP, START] and s.open  # the next utterance starts at once
    # The VAD's own stop later ends that next utterance, once.
    frames, s = on_vad(s, False)
    assert frames == [STOP] and not s.open
    # Nothing under way: nothing to cut.
    assert on_interpret_now(s) == ([], s)


def test_interpret_now_in_a_pause_held_by_the_turn_gate_does_not_start_another() -> None:
    _, s = on_vad(CutterState(), True)
    s = CutterState(s.push_to_talk, s.held, vad_speaking=False, open=True)
    frames, s = on_interpret_now(s)
    assert frames == [STOP] and not s.open
    frames, s = on_vad(s, False)  # the turn gate releases the stop it held: swallowed
    assert frames == [] and not s.open


def test_push_to_talk_hears_only_the_hold_and_cuts_at_release() -> None:
    _, s = on_talk(CutterState(), push_to_talk=True, held=False)
    assert not s.hearing
    frames, s = on_vad(s, True)  # speech the mic gate silenced too late for the VAD
    assert frames == [] and not s.open
    frames, s = on_talk(s, True, True)  # pressed: the utterance starts now
    assert frames == [START] and s.open
    frames, s = on_vad(s, True)  # the VAD's start inside the hold: already open
    assert frames == []
    frames, s = on_talk(s, True, False)  # released while talking: interpreted now
    assert frames == [STOP] and not s.open
    frames, s = on_vad(s, False)  # the VAD hears the silence later: swallowed
    assert frames == []
    frames, s = on_interpret_now(on_talk(s, True, True)[1])  # in a hold: the hold goes on
    assert frames == [STOP, START] and s.open


def test_push_to_talk_switched_on_mid_sentence_ends_it_and_off_mid_word_starts_one() -> None:
    _, s = on_vad(CutterState(), True)
    frames, s = on_talk(s, True, False)
    assert frames == [STOP] and not s.open
    frames, s = on_talk(s, False, False)  # off while the VAD still hears speech
    assert frames == [START] and s.open and s.hearing
    # "held" means nothing with push-to-talk off.
    _, s = on_talk(CutterState(), False, True)
    assert not s.held


class _Record(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, (InputAudioRawFrame, START, STOP, TalkFrame)):
            self.seen.append(frame)
        await self.push_frame(frame, direction)


async def test_the_gates_silence_the_mic_and_cut_in_a_pipeline() -> None:
    talk, vad_out, provider = Talk(), _Record(), _Record()
    # vad_out stands where the VAD is: it sees what the mic gate lets through.
    worker = PipelineWorker(
        Pipeline([talk.mic, vad_out, talk.cutter, provider]),
        params=PipelineParams(audio_in_sample_rate=16000),
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=None,
        check_dangling_tasks=False,
    )
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    voice = b"\x10\x20" * 320

    async def mic() -> None:
        await talk.mic.queue_frame(
            InputAudioRawFrame(audio=voice, sample_rate=16000, num_channels=1)
        )

    async def settle(pred, what: str) -> None:
        for _ in range(200):
            if pred():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(what)

    try:
        await asyncio.sleep(0.2)
        await mic()
        await settle(lambda: len(vad_out.seen) == 1, "open mic frame")
        assert vad_out.seen[0].audio == voice
        await talk.set(True, held=False)
        await mic()
        await settle(lambda: len(vad_out.seen) == 3, "silenced frame")
        assert isinstance(vad_out.seen[1], TalkFrame)
        assert vad_out.seen[2].audio == bytes(len(voice))  # not held: silence, same length
        await talk.set(True, held=True)
        await mic()
        await settle(lambda: len(vad_out.seen) == 5, "held frame")
        assert vad_out.seen[4].audio == voice
        await talk.set(True, held=False)
        await settle(lambda: sum(isinstance(f, STOP) for f in provider.seen) == 1, "cut")
        kinds = [type(f) for f in provider.seen if isinstance(f, (START, STOP))]
        assert kinds == [START, STOP]  # the press started it, the release ended it
        assert not any(isinstance(f, TalkFrame) for f in provider.seen)  # consumed
        assert talk.cutter.cuts == 1
    finally:
        await worker.cancel()
        await run
