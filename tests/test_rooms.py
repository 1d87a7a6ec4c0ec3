"""Two-party rooms on a real ``dragoman serve`` (local provider): a call invites a second
person through a link; each keeps their own agent; each hears the other translated and sees
both sides' captions; either can leave."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from conftest import EN_KEYWORD, JA_KEYWORD, Server, final_caption, launch_chromium, wait_until

from dragoman.bench.caller import AUDIBLE_RMS, Caller, load_wav_mono


async def quiet(caller: Caller, for_s: float = 1.0, timeout: float = 20.0) -> None:
    """Until the caller has heard nothing loud for ``for_s``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        recent = [
            r
            for r, t in zip(caller.result.audio_rms, caller.result.audio_at, strict=True)
            if t > now - for_s
        ]
        if recent and max(recent) < AUDIBLE_RMS:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the other side's audio never went quiet")


async def heard_after(caller: Caller, msg: dict, within_s: float = 15.0) -> None:
    """Until loud audio arrives within ``within_s`` after ``msg`` did."""
    deadline = time.monotonic() + within_s
    while caller.max_rms_after(msg, within_s) <= AUDIBLE_RMS:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing audible within {within_s} s after {msg}")
        await asyncio.sleep(0.2)


def invite(server: Server, caller: Caller) -> dict:
    r = httpx.post(
        f"{server.url}/v1/calls/{caller.result.call_id}/invite",
        json={"control_token": caller.result.control_token},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_call_invites_a_second_person_and_each_hears_the_other(
    server: Server, ja_speech: Path, en_speech: Path
) -> None:
    host = Caller(server.url, source="ja", target="en")
    guest: Caller | None = None
    try:
        assert (await host.call()).status == 201
        await host.wait_open()
        await host.wait_for(lambda m: m.get("state") == "listening", 10)

        # Only the caller (its control token) can invite; the link names the host's language.
        r = httpx.post(
            f"{server.url}/v1/calls/{host.result.call_id}/invite",
            json={"control_token": "not-the-token"},
            timeout=10,
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_call_token"
        room = invite(server, host)
        assert room["language"] == "ja" and room["room_url"].startswith("/?room=")
        info = httpx.get(f"{server.url}/v1/rooms/{room['room_token']}", timeout=10).json()
        assert info["language_name"] == "Japanese"
        bogus = httpx.get(f"{server.url}/v1/rooms/{room['room_token'][:-4]}abcd", timeout=10)
        assert bogus.status_code == 404 and bogus.json()["error"]["code"] == "unknown_room"

        # The guest speaks English and joins with the link's token.
        # (The room sets the target: the host's language.)
        guest = Caller(server.url, source="en", target="xx", room=room["room_token"])
        result = await guest.call()
        assert result.status == 201, result.error
        await guest.wait_open()
        await guest.wait_for(lambda m: m.get("state") == "listening", 10)
        joined = await host.wait_for(lambda m: m.get("type") == "room", 10)
        assert joined["event"] == "joined" and joined["language"] == "en"
        langs = await host.wait_for(
            lambda m: m.get("type") == "languages" and m.get("mode") == "room", 10
        )
        assert (langs["source"], langs["target"]) == ("ja", "en")
        # Each keeps their own agent process.
        h = server.health()
        assert h["active_calls"] == 2 and len(set(h["call_pids"])) == 2, h

        # The host speaks Japanese: the guest's page gets the host's words and their English
        # translation, and hears it after the caption.
        mark = guest.mark()
        host.mic.play(load_wav_mono(ja_speech))
        heard = final_caption("source", frm="peer", containing=JA_KEYWORD)
        ja = await guest.wait_for(heard, 40, since=mark)
        assert ja["lang"] == "ja", ja
        # Simultaneous interpretation may translate the sentence in parts: the part that
        # holds the key word (near the sentence's end) is the one to wait for.
        last_part = final_caption("translation", uid=ja["id"], frm="peer")
        en = await guest.wait_for(last_part, 30, since=mark)
        assert en["lang"] == "en" and en["text"].isascii(), en
        # The caption comes first; its speech follows within seconds on the guest's side.
        await heard_after(guest, en)
        # The host saw its own captions too (not marked as the other person's).
        assert any(final_caption("translation", frm="self")(m) for m in host.result.messages)

        # Each side's agent ignores its microphone while it plays the other person (the
        # echo gate): the guest answers once the translation has finished playing. Parts are
        # spoken as they come, so a short silence between two of them is not the end.
        await quiet(guest, for_s=2.0)

        # The guest answers in English: the host's page shows it, with a note that the
        # offline pipeline cannot speak Japanese (no fake translation).
        mark = host.mark()
        guest.mic.play(load_wav_mono(en_speech))
        heard = final_caption("source", frm="peer", containing=EN_KEYWORD)
        said = await host.wait_for(heard, 40, since=mark)
        assert said["lang"] == "en", said
        note = await host.wait_for(
            lambda m: m.get("type") == "note" and m.get("id") == said["id"], 10, since=mark
        )
        assert note["code"] == "needs_cloud_provider"

        # A room has two people: the link cannot be used again.
        third = Caller(server.url, source="fr", target="xx", room=room["room_token"])
        try:
            res = await third.call()
            assert res.status == 400 and res.error["code"] == "room_full", res
        finally:
            await third.close()

        # The guest leaves: the host is told and its call goes on; then the host leaves.
        mark = host.mark()
        guest.send({"v": 1, "type": "hangup"})
        await guest.wait_for(lambda m: m.get("state") == "ended", 10)
        left = await host.wait_for(lambda m: m.get("type") == "room", 10, since=mark)
        assert left["event"] == "peer_left"
        # The host's call goes on: no `ended` for a while after the guest left…
        with pytest.raises(TimeoutError):
            await host.wait_for(lambda m: m.get("state") == "ended", 3, since=mark)
        assert host.channel_open
        # …and it ends when the host hangs up, for that reason.
        mark = host.mark()
        host.send({"v": 1, "type": "hangup"})
        ended = await host.wait_for(lambda m: m.get("state") == "ended", 10, since=mark)
        assert ended.get("reason") == "hangup", ended
        wait_until(lambda: server.health()["active_calls"] == 0, 15, what="both calls to end")
    finally:
        await host.close()
        if guest is not None:
            await guest.close()


async def test_an_invitation_whose_host_left_cannot_be_used(server: Server) -> None:
    # A quiet node first (earlier tests' calls ended), so every slot counted below is ours.
    wait_until(
        lambda: (h := server.health())["active_calls"] == 0 and h["free_slots"] == h["capacity"],
        30,
        what="a quiet node",
    )
    capacity = server.health()["capacity"]
    host = Caller(server.url, source="ja", target="en", send_audio=False)
    try:
        assert (await host.call()).status == 201
        await host.wait_open()
        await host.wait_for(lambda m: m.get("state") == "listening", 10)
        room = invite(server, host)
        assert server.health()["free_slots"] == capacity - 2  # the host's and the guest's
        host.send({"v": 1, "type": "hangup"})
        await host.wait_for(lambda m: m.get("state") == "ended", 10)
        # The slot held for the guest is given back with the host's call.
        wait_until(
            lambda: server.health()["free_slots"] == capacity,
            15,
            what="the host's and the reserved guest slot to be freed",
        )
    finally:
        await host.close()
    guest = Caller(server.url, source="en", target="xx", send_audio=False, room=room["room_token"])
    try:
        t0 = time.monotonic()
        res = await guest.call()
        assert res.status == 400 and res.error["code"] == "room_ended", res
        assert time.monotonic() - t0 < 10
    finally:
        await guest.close()


@pytest.mark.parametrize("mode", ["room"])
def test_room_mode_is_only_joined_through_a_link(server: Server, mode: str) -> None:
    body = {"sdp": "v=0", "type": "offer", "source": "en", "target": "ja", "mode": mode}
    r = httpx.post(f"{server.url}/v1/calls", json=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_mode", r.text


def test_two_browsers_in_a_room(server: Server, ja_speech: Path, en_speech: Path) -> None:
    """A Japanese speaker calls and invites; an English speaker opens the link in another
    browser. Each page shows the other's words; the English page hears the Japanese
    speaker's translation after its caption; leaving ends both agents."""
    from playwright import sync_api as playwright

    with playwright.sync_playwright() as p:
        host_browser, guest_browser = launch_chromium(p, ja_speech), launch_chromium(p, en_speech)
        try:
            host, guest = host_browser.new_page(), guest_browser.new_page()
            host.goto(server.url)
            host.wait_for_function("document.querySelectorAll('#source option').length > 5")
            host.select_option("#source", "ja")
            host.select_option("#target", "en")
            host.click("#call")
            host.wait_for_function("() => window.dragoman.state === 'listening'", timeout=20_000)
            host.wait_for_function("() => !document.querySelector('#invite').disabled")
            host.click("#invite")
            host.wait_for_function("() => window.dragoman.inviteUrl", timeout=10_000)
            link = host.evaluate("window.dragoman.inviteUrl")
            assert "?room=" in link and host.is_visible("#room-link")

            guest.goto(link)
            guest.wait_for_function("() => window.dragoman.room?.language === 'ja'")
            assert "Japanese" in guest.inner_text("#room-invited")
            assert "room=" not in guest.url  # the capability left the address bar
            guest.select_option("#source", "en")
            guest.click("#call")
            host.wait_for_function(
                "() => window.dragoman.roomEvents.includes('joined')", timeout=20_000
            )

            # The Japanese speaker's words and their English translation on the English page,
            # heard there after the translation's caption arrived.
            guest.wait_for_function(
                """kw => window.dragoman.captions.some(c => c.from === 'peer'
                    && c.side === 'source' && c.lang === 'ja' && c.final && c.text.includes(kw))""",
                arg=JA_KEYWORD,
                timeout=90_000,
            )
            guest.wait_for_function(
                """() => {
                    const d = window.dragoman;
                    const t = d.captions.find(c => c.from === 'peer' && c.side === 'translation'
                        && c.lang === 'en' && c.final && c.text.trim());
                    return t && d.remoteLevels.some(([at, rms]) => at >= t.at && rms > 0.05);
                }""",
                timeout=30_000,
            )
            # The English speaker's words on the Japanese page (captioned, with the note
            # that the offline pipeline cannot speak Japanese).
            host.wait_for_function(
                """() => window.dragoman.captions.some(c => c.from === 'peer'
                    && c.side === 'source' && c.lang === 'en' && c.final && c.text.trim())""",
                timeout=90_000,
            )
            host.wait_for_function(
                "() => window.dragoman.notes.some(n => n.code === 'needs_cloud_provider')",
                timeout=30_000,
            )

            # Either can leave; the room is over when both have, and so are both agents.
            guest.click("#hangup")
            host.wait_for_function(
                "() => window.dragoman.roomEvents.includes('peer_left')", timeout=15_000
            )
            assert host.evaluate("window.dragoman.state") != "ended"
            host.click("#hangup")
            wait_until(lambda: server.health()["active_calls"] == 0, 20, what="both agents gone")
        finally:
            host_browser.close()
            guest_browser.close()


async def test_a_full_node_refuses_the_invitation_not_a_guest(server: Server) -> None:
    """The guest's slot is reserved next to the host when the link is made: a node with no
    free slot says so to the host then (try again), never to a guest mid-way."""
    # Every slot free first: calls of an earlier test may still be ending.
    wait_until(
        lambda: (h := server.health())["active_calls"] == 0 and h["free_slots"] == h["capacity"],
        30,
        what="a quiet node",
    )
    cap = server.health()["capacity"]
    # Silent microphones that send packets: a muted one would meet the no-media limit.
    callers = [Caller(server.url, source="ja", target="en") for _ in range(cap)]
    try:
        for c in callers:
            assert (await c.call()).status == 201
            await c.wait_open()
        host = callers[0]
        await host.wait_for(lambda m: m.get("state") == "listening", 10)
        r = httpx.post(
            f"{server.url}/v1/calls/{host.result.call_id}/invite",
            json={"control_token": host.result.control_token},
            timeout=10,
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_agent", r.text
        assert int(r.headers["retry-after"]) >= 1
        # One call leaves: now the invitation holds a slot for the guest.
        leaving = callers.pop()
        leaving.send({"v": 1, "type": "hangup"})  # not just a closed socket: ends at once
        await leaving.wait_for(lambda m: m.get("state") == "ended", 10)
        await leaving.close()
        wait_until(lambda: server.health()["active_calls"] == cap - 1, 20, what="a free slot")
        room = invite(server, host)
        assert room["room_token"]
        assert server.health()["free_slots"] == 0  # the guest's slot is held
    finally:
        for c in callers:
            await c.close()
