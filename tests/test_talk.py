"""Ways to talk, end to end: a real serve and an aiortc caller whose microphone talks without
a pause (a Kokoro sentence looped with its silences cut off), so nothing but the controls
can end an utterance. "Interpret now" gives a final caption while the speaker goes on; with
push-to-talk on, only what is said while the button is held is interpreted, and its caption
comes right after the release. (The cloud providers: tests/test_providers.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import Server, final_caption, nonstop

from dragoman.bench.caller import Caller, load_wav_mono


def captions(caller: Caller, since: int) -> list[dict]:
    return [m for m in caller.result.messages[since:] if m.get("type") == "caption"]


async def test_interpret_now_and_push_to_talk_on_nonstop_speech(
    server: Server, ja_speech: Path
) -> None:
    caller = Caller(server.url, source="ja", target="en", interpretation="consecutive")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        caller.mic.play(nonstop(load_wav_mono(ja_speech)))

        # Open microphone: the agent hears the talker (partial captions) but, with no pause,
        # would not end the utterance; "interpret now" does.
        partial = await caller.wait_for(
            lambda m: m.get("type") == "caption" and not m["final"] and m["text"], 20
        )
        mark = caller.mark()
        caller.send({"v": 1, "type": "interpret_now"})
        first = await caller.wait_for(final_caption("source", uid=partial["id"]), 20, since=mark)
        assert caller.mic.playing  # still talking: the caption did not wait for a pause
        await caller.wait_for(final_caption("translation", uid=first["id"]), 20, since=mark)
        # The talker went on: the next utterance started at the cut, not at a later pause.
        second = await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["id"] != first["id"] and m["text"],
            20,
            since=mark,
        )

        # Push-to-talk on: the utterance under way ends, and the microphone is not heard.
        mark = caller.mark()
        caller.send({"v": 1, "type": "push_to_talk", "on": True})
        ack = await caller.wait_for(lambda m: m.get("type") == "talk", 5, since=mark)
        assert ack["push_to_talk"] is True and ack["held"] is False
        # The utterance under way is finished (its final source caption, empty if withdrawn,
        # is its last), and after it the agent says nothing while the talker goes on.
        await caller.wait_for(
            lambda m: (
                m.get("type") == "caption"
                and m["id"] == second["id"]
                and m["side"] == "source"
                and m["final"]
            ),
            20,
            since=mark,
        )
        seen = {first["id"], second["id"]}
        not_held = caller.mark()
        await asyncio.sleep(5.0)  # talking all along: an open microphone would caption it
        assert caller.mic.playing
        assert not captions(caller, not_held), captions(caller, not_held)

        # Held for a few seconds of the sentence, then released mid-word.
        mark = caller.mark()
        caller.send({"v": 1, "type": "talk", "held": True})
        pressed = await caller.wait_for(lambda m: m.get("type") == "talk", 5, since=mark)
        assert pressed["held"] is True
        await asyncio.sleep(4.0)
        released_at = caller.mark()
        caller.send({"v": 1, "type": "talk", "held": False})
        held = await caller.wait_for(
            lambda m: final_caption("source")(m) and m["id"] not in seen, 20, since=mark
        )
        assert caller.mic.playing  # the release, not a silence, ended it
        # The utterance is the hold (from the press, with at most the VAD's pre-roll), not
        # the seconds of unheard speech before it.
        assert held["t_end_ms"] - held["t_start_ms"] < 4000 + 1500, held
        assert any(m.get("type") == "talk" for m in caller.result.messages[released_at:])
        await caller.wait_for(final_caption("translation", uid=held["id"]), 20, since=mark)
        seen.add(held["id"])

        # Released: talking on, nothing more is interpreted.
        after_release = caller.mark()
        await asyncio.sleep(4.0)
        unheard = [m for m in captions(caller, after_release) if m["id"] not in seen]
        assert not unheard, unheard

        mark = caller.mark()
        caller.send({"v": 1, "type": "hangup"})
        await caller.wait_for(lambda m: m.get("state") == "ended", 5, since=mark)
    finally:
        await caller.close()


async def test_push_to_talk_in_simultaneous_interpretation(server: Server, ja_speech: Path) -> None:
    caller = Caller(server.url, source="ja", target="en", interpretation="simultaneous")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        mark = caller.mark()
        caller.send({"v": 1, "type": "push_to_talk", "on": True})
        await caller.wait_for(lambda m: m.get("type") == "talk", 5, since=mark)
        not_held = caller.mark()
        caller.mic.play(nonstop(load_wav_mono(ja_speech)))
        await asyncio.sleep(5.0)
        assert not captions(caller, not_held), captions(caller, not_held)

        mark = caller.mark()
        caller.send({"v": 1, "type": "talk", "held": True})
        await caller.wait_for(lambda m: m.get("type") == "talk" and m["held"], 5, since=mark)
        # Interpreted while held (simultaneous: as the words come).
        await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["side"] == "source" and m["text"],
            20,
            since=mark,
        )
        released = caller.mark()
        caller.send({"v": 1, "type": "talk", "held": False})
        last = await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["side"] == "source" and m["final"],
            20,
            since=released,
        )
        # Translations of units cut before may still come; no new unit starts, though the
        # talker goes on.
        cut = {m["id"] for m in captions(caller, 0)}
        await asyncio.sleep(5.0)
        assert caller.mic.playing
        new = [m for m in captions(caller, released) if m["id"] not in cut]
        assert not new, (last, new)
    finally:
        await caller.close()
