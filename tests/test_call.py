"""Whole calls from a scripted aiortc caller: captions, translated speech, language switch
mid-call, hang-up, and the agent process ending with its call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
from conftest import Server, final_caption, wait_until

from dragoman.bench.caller import AUDIBLE_RMS, Caller, load_wav_mono


def after(caller: Caller, msg: dict) -> int:
    """The mark just past control message ``msg`` (found by identity, not equality)."""
    return next(i for i, m in enumerate(caller.result.messages) if m is msg) + 1


async def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """``wait_until`` for async tests: sleeps on the event loop, so the caller's media goes on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_switch_languages_mid_call_then_hang_up(server: Server, ja_speech: Path) -> None:
    speech = load_wav_mono(ja_speech)
    caller = Caller(server.url, source="zh", target="en")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        # First utterance under the wrong source language: Whisper is told it is Chinese.
        caller.mic.play(speech)
        first = await caller.wait_for(final_caption("source"), 30)
        assert first["lang"] == "zh"

        # Switch on the same call, no reconnect: the next sentence follows the new pair.
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "en"})
        ack = await caller.wait_for(
            lambda m: m.get("type") == "languages" and m["source"] == "ja", 5
        )
        assert ack["target"] == "en"
        await caller.wait_for(final_caption("translation", uid=first["id"]), 30)
        before_second = caller.mark()
        caller.mic.play(speech)
        second = await caller.wait_for(
            lambda m: final_caption("source")(m) and m["id"] != first["id"], 30, since=before_second
        )
        assert second["lang"] == "ja"
        # Decoded as Japanese: kana, which a Chinese decode never writes (the key word 公園
        # is written the same in both, and Whisper base heard it as お園 once on a loaded box).
        assert any("\u3040" <= ch <= "\u30ff" for ch in second["text"]), second
        translation = await caller.wait_for(final_caption("translation", uid=second["id"]), 30)
        # Whisper base's wording varies between runs ("park" is usual, not guaranteed): the
        # check is that an English sentence came back, not the Japanese echoed.
        assert translation["lang"] == "en" and translation["text"].isascii()
        assert len(translation["text"].split()) >= 3, translation

        # The second translation was spoken: loud audio arrived while the agent said it was
        # speaking. Only a "speaking" after the second translation caption counts: the first
        # sentence's speech may still start after ``before_second``, and must not pass here.
        speaking = await caller.wait_for(
            lambda m: m.get("state") == "speaking", 20, since=after(caller, translation)
        )
        await asyncio.sleep(2.0)  # let the sentence play
        assert caller.max_rms_after(speaking, 5.0) > AUDIBLE_RMS

        # An unsupported switch is refused with a reason; the call keeps its pair.
        mark = caller.mark()
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "ko"})
        err = await caller.wait_for(lambda m: m.get("type") == "error", 5, since=mark)
        assert err["code"] == "unsupported_pair" and not err["fatal"]
        kept = await caller.wait_for(lambda m: m.get("type") == "languages", 5, since=mark)
        assert (kept["source"], kept["target"]) == ("ja", "en")

        agents_before = {p.pid for p in server.agent_processes()}
        mark = caller.mark()
        caller.send({"v": 1, "type": "hangup"})
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 5, since=mark)
        assert ended["reason"] == "hangup"
        # The process that served the call exits; a fresh one takes its slot.
        wait_until(
            lambda: (
                server.health()["active_calls"] == 0
                and len({p.pid for p in server.agent_processes()} - agents_before) >= 1
                and len(server.agent_processes()) == server.health()["idle_target"]
            ),
            15,
            what="call process gone and replaced",
        )
    finally:
        await caller.close()


async def test_delete_ends_a_live_call_and_its_process(server: Server) -> None:
    caller = Caller(server.url, source="ja", target="en")
    busy_before = set(server.health()["call_pids"])  # an earlier test's call may be ending
    try:
        result = await caller.call()
        assert result.status == 201
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        # This call's own process: the one that holds a call now and did not before.
        [pid] = set(server.health()["call_pids"]) - busy_before
        assert pid in {p.pid for p in server.agent_processes()}
        r = httpx.delete(f"{server.url}/v1/calls/{result.call_id}", timeout=5)
        assert r.status_code == 204
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 5)
        assert ended["reason"] == "remote_hangup"
        # Polled without blocking the event loop: the caller's microphone keeps sending, so
        # nothing but the DELETE ends the call (a blocking wait starves the media, and the
        # no-media limit would end the call and its process within the wait).
        await poll(
            lambda: pid not in {p.pid for p in server.agent_processes()},
            10,
            what="the call's process to exit",
        )
        assert pid not in server.health()["call_pids"]
        assert httpx.delete(f"{server.url}/v1/calls/{result.call_id}").status_code == 404
    finally:
        await caller.close()


async def test_silent_caller_is_ended_by_the_no_media_limit(server: Server) -> None:
    """A caller whose microphone sends nothing is ended with a reason, not kept forever."""
    caller = Caller(server.url, source="ja", target="en")
    try:
        result = await caller.call()
        assert result.status == 201
        await caller.wait_open()
        # Stop sending media entirely (the track ends), keep the peer connection up.
        caller.mic.stop()
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 20)
        assert ended["reason"] == "no_media"
        assert "audio" in ended["message"]
    finally:
        await caller.close()


def test_idle_agent_memory_is_modest(server: Server) -> None:
    """Idle agents share the preloaded imports copy-on-write; each one's own pages are few."""
    # Settled first: a call from an earlier test may still be ending, its agent exiting.
    wait_until(lambda: server.health()["active_calls"] == 0, 30, what="earlier calls to end")
    uss = []
    for proc in server.agent_processes():
        try:
            uss.append(proc.memory_full_info().uss / 2**20)
        except psutil.NoSuchProcess:
            continue  # it exited between listing and reading (a replaced idle agent)
    assert uss and all(np.isfinite(uss))
    # Loose bound: catches a model loaded per process (hundreds of MB), not a tuning target.
    assert max(uss) < 150, uss
