"""Conversation mode on a real ``dragoman serve`` (local provider): two people share one
device, each utterance is identified within the pair and translated into the other
language — or, where the offline pipeline cannot speak that language, captioned with a note
saying why, never passed off as translated. And the agent does not interpret its own voice
coming back from the device's speaker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from difflib import SequenceMatcher
from pathlib import Path

import httpx
import pytest
from conftest import EN_KEYWORD, JA_KEYWORD, Server, final_caption, start_server, stop_server
from fake_provider import KEY, Fake, start_fake, stop_fake

from dragoman.bench.caller import AUDIBLE_RMS, Caller, load_wav_mono


def source_captions(caller: Caller, since: int = 0) -> list[dict]:
    return [m for m in caller.result.messages[since:] if final_caption("source")(m)]


async def test_ja_en_conversation_translates_one_side_and_notes_the_other(
    server: Server, ja_speech: Path, en_speech: Path
) -> None:
    caller = Caller(server.url, source="ja", target="en", mode="conversation")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()
        langs = await caller.wait_for(lambda m: m.get("type") == "languages", 10)
        assert langs["mode"] == "conversation"
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)

        # Person A speaks Japanese: identified as Japanese, translated into English, spoken.
        mark = caller.mark()
        caller.mic.play(load_wav_mono(ja_speech))
        ja = await caller.wait_for(final_caption("source"), 40, since=mark)
        assert ja["lang"] == "ja" and JA_KEYWORD in ja["text"], ja
        translation = await caller.wait_for(final_caption("translation", ja["id"]), 30, mark)
        assert translation["lang"] == "en" and translation["text"].isascii(), translation
        speaking = await caller.wait_for(lambda m: m.get("state") == "speaking", 20, mark)
        await asyncio.sleep(2.5)  # let the sentence play
        assert caller.max_rms_after(speaking, 5.0) > AUDIBLE_RMS
        await asyncio.sleep(2.0)  # and end, before person B answers

        # Person B answers in English: identified as English; the offline pipeline cannot
        # speak Japanese, so the page gets the English caption and a note — no translation.
        mark = caller.mark()
        caller.mic.play(load_wav_mono(en_speech))
        en = await caller.wait_for(final_caption("source"), 40, since=mark)
        assert en["lang"] == "en" and EN_KEYWORD in en["text"].lower(), en
        note = await caller.wait_for(lambda m: m.get("type") == "note", 10, since=mark)
        assert note["id"] == en["id"] and note["code"] == "needs_cloud_provider"
        assert "Japanese" in note["message"] and "cloud provider" in note["message"]
        await asyncio.sleep(1.0)
        assert not [
            m for m in caller.result.messages[mark:] if final_caption("translation", en["id"])(m)
        ], "an English sentence was 'translated' by a pipeline that cannot speak Japanese"
    finally:
        await caller.close()


async def test_the_agent_does_not_interpret_its_own_voice(server: Server, ja_speech: Path) -> None:
    """The device's speaker leaks the translation back into its microphone (echo gain 0.5,
    no echo cancellation at all). In conversation mode the agent ignores itself (its input
    is closed while it speaks); in one-way simultaneous mode — where it speaks while the
    person may still be talking, so the input stays open — it recognises its own words and
    drops them. The same echo in one-way consecutive mode, which relies on the browser's
    echo canceller alone, comes back as a new utterance translated again: that shows the
    measurement can see an echo."""
    counts: dict[str, tuple[int, int]] = {}
    for mode, interpretation in (
        ("conversation", None),
        ("one_way", "simultaneous"),
        ("one_way", "consecutive"),
    ):
        caller = Caller(
            server.url,
            source="ja",
            target="en",
            mode=mode,
            echo=0.5,
            interpretation=interpretation,
        )
        try:
            result = await caller.call()
            assert result.status == 201, result.error
            await caller.wait_open()
            await caller.wait_for(lambda m: m.get("state") == "listening", 10)
            await asyncio.sleep(1.0)  # the connect chime and its echo are over
            mark = caller.mark()
            caller.mic.play(load_wav_mono(ja_speech))
            await caller.wait_for(final_caption("translation"), 40, mark)
            speaking = await caller.wait_for(lambda m: m.get("state") == "speaking", 20, mark)
            await asyncio.sleep(2.5)
            assert caller.max_rms_after(speaking, 5.0) > AUDIBLE_RMS  # the echo was loud
            await asyncio.sleep(8.0)  # time for an echo to be heard, cut and transcribed
            said = [
                m["text"]
                for m in caller.result.messages[mark:]
                if final_caption("translation")(m) and m["text"]
            ]
            counts[f"{mode}/{interpretation}"] = (
                len(source_captions(caller, mark)),
                repeats(said),
            )
        finally:
            await caller.close()
    print(f"(source captions, re-translations) from one sentence with its echo: {counts}")
    assert counts["conversation/None"] == (1, 0), counts
    assert counts["one_way/simultaneous"][1] == 0, counts
    assert counts["one_way/consecutive"][0] >= 2 and counts["one_way/consecutive"][1] >= 1


def repeats(translations: list[str]) -> int:
    """Translations that mostly repeat an earlier one: the agent's voice interpreted again."""
    words = [t.lower().split() for t in translations]
    return sum(
        any(SequenceMatcher(a=w, b=earlier).ratio() > 0.6 for earlier in words[:i])
        for i, w in enumerate(words)
    )


def test_conversation_pairs_the_offline_pipeline_cannot_serve_are_refused(server: Server) -> None:
    body = {"sdp": "v=0", "type": "offer", "source": "ja", "target": "ko", "mode": "conversation"}
    r = httpx.post(f"{server.url}/v1/calls", json=body, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unsupported_pair" and "English" in err["message"], err
    r = httpx.post(f"{server.url}/v1/calls", json={**body, "mode": "duet"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_mode", r.text
    langs = httpx.get(f"{server.url}/v1/languages", timeout=10).json()
    by_name = {p["name"]: p for p in langs["providers"]}
    assert by_name["local"]["conversation"] and by_name["openai-cascade"]["conversation"]
    assert not by_name["openai-translate"]["conversation"]
    assert "one language per session" in by_name["openai-translate"]["conversation_reason"]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Fake]]:
    fake = start_fake(tmp_path_factory.mktemp("fake"))
    srv = start_server(
        tmp_path_factory.mktemp("cascade"),
        DRAGOMAN_PROVIDER="openai-cascade",
        DRAGOMAN_OPENAI_API_KEY=KEY,
        DRAGOMAN_OPENAI_BASE_URL=fake.openai_base,
        DRAGOMAN_MAX_CALLS="1",
    )
    try:
        yield srv, fake
    finally:
        assert stop_server(srv) == 0, srv.log_tail()
        stop_fake(fake)


async def test_cascade_conversation_routes_each_sentence_by_its_language(
    cascade: tuple[Server, Fake], ja_speech: Path, en_speech: Path
) -> None:
    """Protocol test against the local fake of OpenAI's REST API: the language is identified
    on the node, and each direction goes through the provider — transcription in the
    speaker's language, a prompt into the other one, speech of the result."""
    server, fake = cascade
    caller = Caller(server.url, source="ja", target="en", mode="conversation")
    try:
        assert (await caller.call()).status == 201
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        for wav, spoken, into in ((ja_speech, "ja", "en"), (en_speech, "en", "ja")):
            mark = caller.mark()
            caller.mic.play(load_wav_mono(wav))
            src = await caller.wait_for(final_caption("source"), 40, since=mark)
            assert src["lang"] == spoken, src
            out = await caller.wait_for(final_caption("translation", src["id"]), 30, mark)
            # The fake "translates" by naming the target it read from our prompt.
            assert out["lang"] == into and out["text"].startswith(f"[{into}]"), out
            await caller.wait_for(lambda m: m.get("state") == "speaking", 20, mark)
            await caller.wait_for(lambda m: m.get("state") == "listening", 30, mark)
        transcriptions = fake.sessions("transcription")
        assert [t["language"] for t in transcriptions[-2:]] == ["ja", "en"], transcriptions
        prompts = [c["system"] for c in fake.sessions("chat")[-2:]]
        assert "from Japanese into English" in prompts[0], prompts
        assert "from English into Japanese" in prompts[1], prompts
        assert len(fake.sessions("speech")) >= 2
    finally:
        await caller.close()
