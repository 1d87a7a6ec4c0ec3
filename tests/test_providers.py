"""PROTOCOL tests of the streaming providers (openai-translate, gemini-live-translate) and
direct mode against local FAKES of the providers' APIs (dragoman.fakes, a separate process):
no real provider is reachable from CI.

Our side talks through the providers' official SDKs (openai, google-genai), and the fakes
parse every message they receive with those SDKs' client-side models and build every message
they send from the server-side ones: a message either side gets wrong fails validation (the
fake counts ``invalid_client_events``, which must stay 0).

They check session setup, audio streamed up at the provider's rate, translated audio and
transcript deltas turned into sound and captions, language switches, refusals, drops and
stalls ending the call with a reason (never a hang), direct-mode credentials (OpenAI client
secrets, Gemini ephemeral tokens) and the overflow switch, and `dragoman providers check`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import Server, nonstop, start_server, stop_server, wait_until
from fake_provider import GEMINI_KEY, KEY, Fake, start_fake, stop_fake

from dragoman.bench.caller import AUDIBLE_RMS, Caller, load_wav_mono
from dragoman.contract.page import ERRORS


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    f = start_fake(tmp_path_factory.mktemp("fake"))
    yield f
    stop_fake(f)


GLOSSARY = "ゲートウェイ = Schnittstelle"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, fake: Fake) -> Iterator[Server]:
    glossaries = tmp_path_factory.mktemp("glossaries")
    (glossaries / "network.txt").write_text(GLOSSARY + "\n", encoding="utf-8")
    srv = start_server(
        tmp_path_factory.mktemp("cloud"),
        DRAGOMAN_GLOSSARY_DIR=str(glossaries),
        DRAGOMAN_PROVIDER="openai-translate",
        DRAGOMAN_OPENAI_API_KEY=KEY,
        DRAGOMAN_OPENAI_BASE_URL=fake.openai_base,
        DRAGOMAN_GEMINI_API_KEY=GEMINI_KEY,
        DRAGOMAN_GEMINI_BASE_URL=fake.gemini_base,
        DRAGOMAN_MAX_CALLS="2",
        DRAGOMAN_PROVIDER_CONNECT_TIMEOUT_S="3",
        DRAGOMAN_PROVIDER_PING_INTERVAL_S="3",  # a stall is noticed in ≤ 6 s (default 5: 10 s)
        DRAGOMAN_NO_MEDIA_TIMEOUT_S="30",
        **fake.trusting_env(),
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


@pytest.fixture(autouse=True)
def _no_fault(fake: Fake, cloud: Server) -> Iterator[None]:
    fake.fault()
    # Each test starts with both slots free: an ended call's process takes a moment to go.
    wait_until(lambda: cloud.health()["active_calls"] == 0, 30, what="calls to end")
    wait_until(lambda: cloud.health()["idle_agents"] >= 2, 30, what="idle agents")
    yield
    fake.fault()
    # Every message our side sent was one the provider's SDK models accept.
    state = fake.state()
    invalid = [s["invalid"] for s in state["sessions"] if s.get("invalid")]
    assert state["counters"].get("invalid_client_events", 0) == 0, invalid


def captions(caller: Caller, side: str) -> list[dict]:
    return [m for m in caller.result.messages if m.get("type") == "caption" and m["side"] == side]


async def test_call_streams_through_the_provider_and_switches_language(
    cloud: Server, fake: Fake, ja_speech: Path
) -> None:
    speech = load_wav_mono(ja_speech)
    before = len(fake.sessions("openai-translate-ws"))
    caller = Caller(cloud.url, source="ja", target="es")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        t_speech = time.monotonic()
        caller.mic.play(speech)
        final = await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["side"] == "translation" and m["final"], 20
        )
        assert final["lang"] == "es" and final["text"].startswith("[es] word")
        source = [c for c in captions(caller, "source") if c["final"]]
        assert source and "word" in source[0]["text"] and source[0]["id"] == final["id"]
        # The translated audio (the fake's tone) reached the caller after its speech.
        heard = [r for r in caller.result.audio_rms[50:] if r > AUDIBLE_RMS]
        assert len(heard) > 10, "no translated audio came back"

        sessions = fake.sessions("openai-translate-ws")
        assert len(sessions) == before + 1
        sess = sessions[-1]
        assert sess["model"] == "gpt-realtime-translate"
        config = sess["updates"][0]["audio"]
        assert config["output"]["language"] == "es"
        assert config["input"]["transcription"]["model"] == "gpt-realtime-whisper"
        # Audio goes up continuously (silence included) as 24 kHz PCM16: ~48 kB per second.
        rate = sess["audio_bytes"] / (time.monotonic() - t_speech)
        assert 30_000 < rate < 60_000, rate

        # Switch target on the open session: a session.update, no new session.
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "fr"})
        await caller.wait_for(lambda m: m.get("type") == "languages" and m["target"] == "fr", 5)
        caller.mic.play(speech)
        await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["text"].startswith("[fr]"), 20
        )
        sessions = fake.sessions("openai-translate-ws")
        assert len(sessions) == before + 1
        assert sessions[-1]["updates"][-1]["audio"]["output"]["language"] == "fr"

        # A target the model does not speak is refused; the call keeps its pair.
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "th"})
        err = await caller.wait_for(lambda m: m.get("type") == "error", 5)
        assert err["code"] == "unsupported_pair"

        caller.send({"v": 1, "type": "hangup"})
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10)
        assert ended["reason"] == "hangup"
    finally:
        await caller.close()


async def _ended(caller: Caller, timeout: float) -> dict:
    return await caller.wait_for(lambda m: m.get("state") == "ended", timeout)


async def test_a_refused_key_ends_the_call_with_a_reason(cloud: Server, fake: Fake) -> None:
    fake.fault(refuse=True)
    caller = Caller(cloud.url, source="ja", target="en")
    try:
        assert (await caller.call()).status == 201
        ended = await _ended(caller, 15)
        assert ended["reason"] == "provider_error"
        errors = [m for m in caller.result.messages if m.get("type") == "error"]
        assert errors and errors[0]["code"] == "provider_refused" and errors[0]["fatal"]
    finally:
        await caller.close()


async def test_a_dropped_session_is_reopened_once_then_the_call_ends(
    cloud: Server, fake: Fake
) -> None:
    before = len(fake.sessions("openai-translate-ws"))
    fake.fault(drop_after_s=1.0)
    caller = Caller(cloud.url, source="ja", target="en")
    try:
        assert (await caller.call()).status == 201
        caller.mic.play(np.zeros(16000 * 10, dtype=np.int16))  # keep audio flowing
        ended = await _ended(caller, 20)
        assert ended["reason"] == "provider_lost"
        codes = [m["code"] for m in caller.result.messages if m.get("type") == "error"]
        assert codes == ["provider_reconnecting", "provider_lost"]
        assert len(fake.sessions("openai-translate-ws")) == before + 2
    finally:
        await caller.close()


async def test_a_stalled_provider_is_detected_and_the_call_ends(cloud: Server, fake: Fake) -> None:
    fake.fault(stall_after_s=0.5)
    caller = Caller(cloud.url, source="ja", target="en")
    try:
        assert (await caller.call()).status == 201
        caller.mic.play(np.zeros(16000 * 40, dtype=np.int16))
        # Unanswered pings (3 s interval, 3 s timeout) end each session; one reconnect.
        ended = await _ended(caller, 45)
        assert ended["reason"] == "provider_lost"
    finally:
        await caller.close()


def test_provider_choice_errors_are_clear(cloud: Server) -> None:
    base = {"sdp": "v=0", "type": "offer", "source": "ja", "target": "en"}
    r = httpx.post(f"{cloud.url}/v1/calls", json={**base, "provider": "babelfish"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_provider"
    langs = httpx.get(f"{cloud.url}/v1/languages")
    body = langs.json()
    assert body["provider"] == "openai-translate"
    by_name = {p["name"]: p for p in body["providers"]}
    assert (
        by_name["openai-translate"]["available"]
        and "th" not in by_name["openai-translate"]["targets"]
    )
    assert (
        by_name["gemini-live-translate"]["available"]
        and "th" in by_name["gemini-live-translate"]["targets"]
    )
    assert KEY not in langs.text and GEMINI_KEY not in langs.text


def test_direct_mode_mints_a_short_lived_secret_and_never_the_key(
    cloud: Server, fake: Fake
) -> None:
    r = httpx.post(f"{cloud.url}/v1/calls/direct", json={"source": "ko", "target": "ja"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert KEY not in r.text
    assert body["mode"] == "direct" and body["reason"] == "requested"
    assert body["client_secret"].startswith("ek_")
    assert 0 < body["expires_at"] - time.time() <= 61
    assert body["call_url"] == f"{fake.openai_base}/realtime/translations/calls"
    minted = fake.sessions("client_secret")[-1]["request"]
    assert minted["expires_after"]["seconds"] == 60
    assert minted["session"]["model"] == "gpt-realtime-translate"
    assert minted["session"]["audio"]["output"]["language"] == "ja"

    bad = httpx.post(
        f"{cloud.url}/v1/calls/direct",
        json={"source": "ko", "target": "th", "provider": "openai-translate"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unsupported_pair"
    unknown = httpx.post(
        f"{cloud.url}/v1/calls/direct", json={"source": "ko", "target": "ja", "provider": "local"}
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_provider"
    fake.fault(refuse=True)
    refused = httpx.post(f"{cloud.url}/v1/calls/direct", json={"source": "ko", "target": "ja"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "provider_refused"


async def test_a_full_fleet_overflows_to_direct_mode(cloud: Server, fake: Fake) -> None:
    holders = [Caller(cloud.url, source="ja", target="en") for _ in range(2)]
    try:
        for h in holders:
            assert (await h.call()).status == 201
        await asyncio.sleep(0.5)
        extra = Caller(cloud.url, source="ja", target="en")
        offer_result = await extra.call()
        await extra.close()
        assert offer_result.status == 200
        body = offer_result.direct
        assert body is not None and body["mode"] == "direct" and body["reason"] == "overflow"
        assert body["client_secret"].startswith("ek_") and KEY not in str(body)
    finally:
        for h in holders:
            await h.close()


async def test_a_call_can_choose_gemini_live(cloud: Server, fake: Fake, ja_speech: Path) -> None:
    speech = load_wav_mono(ja_speech)
    before = len(fake.sessions("gemini-live"))
    caller = Caller(cloud.url, source="ja", target="th", provider="gemini-live-translate")
    try:
        assert (await caller.call()).status == 201, caller.result.error
        await caller.wait_open()
        caller.mic.play(speech)
        final = await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["side"] == "translation" and m["final"], 20
        )
        assert final["lang"] == "th" and final["text"].startswith("[th] word")
        sessions = fake.sessions("gemini-live")
        assert len(sessions) == before + 1
        setup = sessions[-1]["setup"]
        assert setup["model"] == "models/gemini-3.5-live-translate-preview"
        generation = setup["generationConfig"]
        assert generation["translationConfig"] == {
            "targetLanguageCode": "th",
            "echoTargetLanguage": True,
        }
        assert generation["responseModalities"] == ["AUDIO"]
        assert "inputAudioTranscription" in setup and "outputAudioTranscription" in setup
        assert not sessions[-1]["constrained"] and sessions[-1]["version"] == "v1beta"
        assert sessions[-1]["audio_bytes"] > 16000 * 2  # > 1 s of 16 kHz PCM16 went up

        # The setup is fixed per connection: a switch opens a new session, quietly.
        caller.send({"v": 1, "type": "set_languages", "source": "ja", "target": "ko"})
        await caller.wait_for(lambda m: m.get("type") == "languages" and m["target"] == "ko", 5)
        caller.mic.play(speech)
        await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["text"].startswith("[ko]"), 20
        )
        sessions = fake.sessions("gemini-live")
        assert len(sessions) == before + 2
        translation = sessions[-1]["setup"]["generationConfig"]["translationConfig"]
        assert translation["targetLanguageCode"] == "ko"
        errors = [m for m in caller.result.messages if m.get("type") == "error"]
        assert errors == [], errors
    finally:
        await caller.close()


async def test_gemini_refusing_the_key_ends_the_call(cloud: Server, fake: Fake) -> None:
    fake.fault(refuse=True)
    caller = Caller(cloud.url, source="ja", target="ko", provider="gemini-live-translate")
    try:
        assert (await caller.call()).status == 201
        ended = await _ended(caller, 15)
        assert ended["reason"] == "provider_error"
    finally:
        await caller.close()


async def test_cascade_transcribes_translates_with_prompt_and_glossary_then_speaks(
    cloud: Server, fake: Fake, ja_speech: Path
) -> None:
    speech = load_wav_mono(ja_speech)
    caller = Caller(
        cloud.url,
        source="ja",
        target="de",
        provider="openai-cascade",
        glossary="network",
        interpretation="consecutive",
    )
    try:
        assert (await caller.call()).status == 201, caller.result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        caller.mic.play(speech)
        translation = await caller.wait_for(
            lambda m: m.get("type") == "caption" and m["side"] == "translation", 30
        )
        source = [c for c in captions(caller, "source") if c["id"] == translation["id"]]
        assert source and source[0]["text"].startswith("fake transcript")
        assert translation["lang"] == "de"
        assert translation["text"] == f"[de] {source[0]['text']}"
        await caller.wait_for(lambda m: m.get("state") == "speaking", 10)

        transcription = fake.sessions("transcription")[-1]
        assert transcription["model"] == "gpt-4o-transcribe"
        assert transcription["language"] == "ja" and transcription["audio_bytes"] > 32_000
        system = fake.sessions("chat")[-1]["system"]
        assert "from Japanese into German" in system and GLOSSARY in system
        spoken = fake.sessions("speech")[-1]
        assert spoken["voice"] == "alloy" and spoken["input"] == translation["text"]
        assert spoken["model"] == "gpt-4o-mini-tts" and spoken["response_format"] == "pcm"
        await asyncio.sleep(1.0)
        heard = [r for r in caller.result.audio_rms[50:] if r > AUDIBLE_RMS]
        assert len(heard) > 5, "the translation was not spoken"
    finally:
        await caller.close()


async def test_cascade_interprets_now_while_the_person_talks_on(
    cloud: Server, fake: Fake, ja_speech: Path
) -> None:
    caller = Caller(
        cloud.url, source="ja", target="de", provider="openai-cascade", interpretation="consecutive"
    )
    try:
        assert (await caller.call()).status == 201, caller.result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        before = len(fake.sessions("transcription"))
        caller.mic.play(nonstop(load_wav_mono(ja_speech)))
        await asyncio.sleep(3.0)  # no pause: nothing to transcribe yet
        assert len(fake.sessions("transcription")) == before
        mark = caller.mark()
        caller.send({"v": 1, "type": "interpret_now"})
        translation = await caller.wait_for(_caption("translation", final=True), 30, since=mark)
        assert translation["text"].startswith("[de] fake transcript")
        assert caller.mic.playing  # the talker went on: the control ended the utterance
        # The cut audio went up whole: about the three seconds and more before the control.
        assert fake.sessions("transcription")[before]["audio_bytes"] > 2 * 32_000
    finally:
        await caller.close()


async def test_speech_to_speech_providers_refuse_the_talk_controls(cloud: Server) -> None:
    caller = Caller(cloud.url, source="ja", target="es")  # openai-translate: its own VAD
    try:
        assert (await caller.call()).status == 201, caller.result.error
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        for msg in ({"type": "push_to_talk", "on": True}, {"type": "interpret_now"}):
            mark = caller.mark()
            caller.send({"v": 1, **msg})
            err = await caller.wait_for(lambda m: m.get("type") == "error", 5, since=mark)
            assert err["code"] == "unsupported_control" and not err["fatal"]
            assert err["message"] == ERRORS["unsupported_control"]
        assert not [m for m in caller.result.messages if m.get("type") == "talk"]
    finally:
        await caller.close()


def _caption(side: str, final: bool | None = None):
    def match(m: dict) -> bool:
        return (
            m.get("type") == "caption"
            and m["side"] == side
            and (final is None or m["final"] == final)
        )

    return match


async def test_simultaneous_cascade_speaks_while_the_person_talks_and_switches_mid_call(
    cloud: Server, fake: Fake, ja_speech: Path
) -> None:
    """The fake transcribes as the audio arrives ("word1 word2 …", a comma every 4th): the
    first piece is translated, captioned and sent for speech while the fake is still hearing
    words of the same sentence; later pieces carry the earlier ones as context; then
    ``set_interpretation`` turns the same call turn by turn."""
    speech = load_wav_mono(ja_speech)
    streams, chats = len(fake.sessions("openai-transcription-ws")), len(fake.sessions("chat"))
    speeches = len(fake.sessions("speech"))
    caller = Caller(
        cloud.url,
        source="ja",
        target="de",
        provider="openai-cascade",
        glossary="network",
        interpretation="simultaneous",
    )
    try:
        assert (await caller.call()).status == 201, caller.result.error
        await caller.wait_open()
        languages = await caller.wait_for(lambda m: m.get("type") == "languages", 10)
        assert languages["interpretation"] == "simultaneous"
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        since = caller.mark()
        caller.mic.play(speech)
        source = await caller.wait_for(_caption("source", final=True), 30, since=since)
        uid = source["id"]
        words = source["text"].split()
        assert words[:4] == ["word1", "word2", "word3", "word4,"] and len(words) > 4, source
        said = caller.result.messages[since:]
        # The translation caption (partial: the sentence goes on) came before the source
        # caption's final, which waits for the end of speech.
        first = next(i for i, m in enumerate(said) if _caption("translation")(m))
        final_at = said.index(source)
        assert first < final_at and said[first]["id"] == uid and not said[first]["final"]
        assert said[first]["text"].startswith("[de] word1 word2 word3 word4,")
        assert said[first]["stable"] == len(said[first]["text"])  # a piece never changes
        assert any(m.get("state") == "speaking" for m in said[:final_at])
        partials = [m for m in said[:final_at] if _caption("source", final=False)(m)]
        assert partials and all(m["id"] == uid for m in partials)
        final = await caller.wait_for(
            lambda m: _caption("translation", final=True)(m) and m["id"] == uid, 20, since=since
        )
        assert final["lang"] == "de" and final["text"].startswith(said[first]["text"])

        # The first speech request went out while the fake was still hearing that sentence:
        # fewer of its words than it finally had.
        spoken = fake.sessions("speech")[speeches:]
        assert 0 < spoken[0]["words_heard"] < len(words), (spoken[0], len(words))
        assert spoken[0]["input"] == said[first]["text"]
        assert all(0.25 <= (s["speed"] or 1.0) <= 4.0 for s in spoken)
        # Each piece after the first was sent with the previous one and its translation.
        asked = fake.sessions("chat")[chats:]
        assert len(asked) >= 2
        assert asked[0]["messages"][1] == {"role": "user", "content": "word1 word2 word3 word4,"}
        assert asked[1]["messages"][1:3] == [
            {"role": "user", "content": "word1 word2 word3 word4,"},
            {"role": "assistant", "content": "[de] word1 word2 word3 word4,"},
        ]
        assert "from Japanese into German" in asked[0]["system"] and GLOSSARY in asked[0]["system"]
        await asyncio.sleep(1.0)
        heard = [r for r in caller.result.audio_rms[50:] if r > AUDIBLE_RMS]
        assert len(heard) > 5, "the translation was not spoken"

        # The realtime session: 24 kHz PCM16 going up, our VAD committing, SDK-valid events
        # (the autouse fixture checks that none was refused).
        [stream] = fake.sessions("openai-transcription-ws")[streams:]
        config = stream["updates"][0]["audio"]["input"]
        assert config["transcription"]["model"] == "gpt-realtime-whisper"
        assert config["transcription"]["language"] == "ja" and config["turn_detection"] is None
        assert stream["commits"] >= 1 and stream["audio_bytes"] > 24000 * 2

        # Consecutive from now on, on the same call: the stream closes, the turn-by-turn
        # transcription takes the next sentence.
        since = caller.mark()
        caller.send({"v": 1, "type": "set_interpretation", "interpretation": "consecutive"})
        languages = await caller.wait_for(lambda m: m.get("type") == "languages", 5, since=since)
        assert languages["interpretation"] == "consecutive"
        wait_until(
            lambda: fake.sessions("openai-transcription-ws")[streams]["closed"],
            10,
            what="the transcription stream to close",
        )
        caller.mic.play(speech)
        turn = await caller.wait_for(_caption("translation"), 30, since=since)
        assert turn["text"].startswith("[de] fake transcript") and turn["final"]
        assert len(fake.sessions("openai-transcription-ws")) == streams + 1
        errors = [m for m in caller.result.messages if m.get("type") == "error"]
        assert errors == [], errors
    finally:
        await caller.close()


async def test_simultaneous_cascade_refused_at_its_stream_ends_the_call(
    cloud: Server, fake: Fake
) -> None:
    fake.fault(refuse=True)  # the realtime transcription session's upgrade is refused
    caller = Caller(cloud.url, source="ja", target="de", provider="openai-cascade")
    try:
        assert (await caller.call()).status == 201
        ended = await _ended(caller, 15)
        assert ended["reason"] == "provider_error"
        errors = _errors(caller)
        assert errors and errors[0]["code"] == "provider_refused" and errors[0]["fatal"]
    finally:
        await caller.close()


def test_an_unknown_glossary_is_refused(cloud: Server) -> None:
    caller_body = {"type": "offer", "source": "ja", "target": "de", "provider": "openai-cascade"}
    r = httpx.post(f"{cloud.url}/v1/calls", json={**caller_body, "sdp": "v=0", "glossary": "../x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_glossary"


async def test_cascade_refused_key_ends_the_call(
    cloud: Server, fake: Fake, ja_speech: Path
) -> None:
    caller = Caller(
        cloud.url,
        source="ja",
        target="de",
        provider="openai-cascade",
        interpretation="consecutive",
    )
    try:
        assert (await caller.call()).status == 201
        await caller.wait_open()
        fake.fault(refuse=True)  # the first request (the transcription) is refused
        caller.mic.play(load_wav_mono(ja_speech))
        ended = await _ended(caller, 30)
        assert ended["reason"] == "provider_error"
        errors = [m for m in caller.result.messages if m.get("type") == "error"]
        assert errors and errors[0]["code"] == "provider_refused"
    finally:
        await caller.close()


# --- what a provider says about itself stays in the server log --------------------------
def _marker() -> str:
    """Text a provider might put in an error (an internal id, an organisation): unique per
    test, so finding it in the shared server log means this test's failure put it there."""
    return f"INTERNAL-SECRET-{uuid.uuid4().hex[:8]} org-xyz"


def _errors(caller: Caller, since: int = 0) -> list[dict]:
    return [m for m in caller.result.messages[since:] if m.get("type") == "error"]


def _only_in_log(cloud: Server, caller: Caller | None, marker: str, seen: str = "") -> None:
    """The marker reached the operator's log and nothing the caller got."""
    if caller is not None:
        assert marker not in json.dumps(caller.result.messages)
    assert marker not in seen
    wait_until(lambda: marker in cloud.log_path.read_text(errors="replace"), 10, what="the log")


async def test_a_provider_error_event_reaches_the_page_in_our_words(
    cloud: Server, fake: Fake
) -> None:
    marker = _marker()
    # A recoverable error event with the provider's own text, in the session this call opens.
    fake.fault(error_after_s=0.3, error_fatal=False, error_message=marker)
    caller = Caller(cloud.url, source="ja", target="en")
    try:
        assert (await caller.call()).status == 201
        caller.mic.play(np.zeros(16000 * 5, dtype=np.int16))  # the fake answers audio
        err = await caller.wait_for(lambda m: m.get("type") == "error", 10)
        assert err == {
            "v": 1,
            "type": "error",
            "code": "provider_error",
            "message": ERRORS["provider_error"],
            "fatal": False,
        }
        # The call goes on: it ends only when the caller hangs up.
        since = caller.mark()
        caller.send({"v": 1, "type": "hangup"})
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=since)
        assert ended["reason"] == "hangup"
        _only_in_log(cloud, caller, marker)
    finally:
        await caller.close()


@pytest.mark.parametrize("provider", ["openai-translate", "gemini-live-translate"])
async def test_a_failing_provider_ends_the_call_in_our_words(
    cloud: Server, fake: Fake, provider: str
) -> None:
    marker = _marker()
    # openai-translate: a fatal error event; Gemini: a close (1011) whose reason is theirs.
    fake.fault(error_after_s=0.3, error_message=marker)
    caller = Caller(cloud.url, source="ja", target="ko", provider=provider)
    try:
        assert (await caller.call()).status == 201
        caller.mic.play(np.zeros(16000 * 10, dtype=np.int16))
        ended = await _ended(caller, 20)
        assert ended["reason"] == "provider_lost"
        errors = _errors(caller)
        assert [(e["code"], e["message"], e["fatal"]) for e in errors] == [
            ("provider_reconnecting", ERRORS["provider_reconnecting"], False),
            ("provider_lost", ERRORS["provider_lost"], True),
        ]
        _only_in_log(cloud, caller, marker)
    finally:
        await caller.close()


def test_direct_mode_errors_are_ours_and_the_providers_text_is_logged(
    cloud: Server, fake: Fake
) -> None:
    pair = {"source": "ko", "target": "ja"}
    for fault, status, code in (
        ({"refuse": True}, 401, "provider_refused"),
        ({"error_after_s": 0}, 500, "provider_unavailable"),
    ):
        marker = _marker()
        fake.fault(**fault, error_message=marker)
        r = httpx.post(f"{cloud.url}/v1/calls/direct", json=pair)
        assert r.status_code == 503 and r.headers["Retry-After"] == "2"
        sentence = ERRORS[code].removesuffix(".")
        assert r.json()["error"] == {"code": code, "message": f"{sentence} (HTTP {status})."}
        _only_in_log(cloud, None, marker, r.text)


async def test_cascade_provider_errors_reach_the_page_in_our_words(
    cloud: Server, fake: Fake, ja_speech: Path
) -> None:
    marker = _marker()
    caller = Caller(
        cloud.url,
        source="ja",
        target="de",
        provider="openai-cascade",
        interpretation="consecutive",
    )
    try:
        assert (await caller.call()).status == 201
        await caller.wait_open()
        await caller.wait_for(lambda m: m.get("state") == "listening", 10)
        since = caller.mark()
        fake.fault(error_after_s=0, error_message=marker)  # every request: HTTP 500
        caller.mic.play(load_wav_mono(ja_speech))
        err = await caller.wait_for(lambda m: m.get("type") == "error", 30, since=since)
        assert (err["code"], err["message"], err["fatal"]) == (
            "provider_error",
            ERRORS["provider_error"],
            False,
        )
        # A failed sentence is lost, not the call.
        since = caller.mark()
        caller.send({"v": 1, "type": "hangup"})
        ended = await caller.wait_for(lambda m: m.get("state") == "ended", 10, since=since)
        assert ended["reason"] == "hangup"
        _only_in_log(cloud, caller, marker)
    finally:
        await caller.close()


# --- Gemini as a direct-mode provider ---------------------------------------------------------
def test_gemini_direct_mode_mints_a_locked_one_use_token_and_never_the_key(
    cloud: Server, fake: Fake
) -> None:
    pair = {"source": "ko", "target": "th"}  # Thai: only Gemini's direct mode speaks it
    r = httpx.post(f"{cloud.url}/v1/calls/direct", json=pair)
    assert r.status_code == 200, r.text
    body = r.json()
    assert KEY not in r.text and GEMINI_KEY not in r.text
    assert body["provider"] == "gemini-live-translate" and body["reason"] == "requested"
    assert body["client_secret"].startswith("auth_tokens/")
    assert 0 < body["expires_at"] - time.time() <= 61
    host = fake.gemini_base.removeprefix("https://")
    assert body["call_url"] == (
        f"wss://{host}/ws/google.ai.generativelanguage.v1alpha."
        "GenerativeService.BidiGenerateContentConstrained"
    )
    # What the page sends is the SDK's setup for this pair.
    assert body["setup"]["generationConfig"]["translationConfig"]["targetLanguageCode"] == "th"
    minted = fake.sessions("gemini-token")[-1]["request"]
    assert minted["uses"] == 1
    locked = minted["bidiGenerateContentSetup"]
    assert locked["model"] == "models/gemini-3.5-live-translate-preview"
    assert locked["generationConfig"]["translationConfig"]["targetLanguageCode"] == "th"
    assert "inputAudioTranscription" in locked and "outputAudioTranscription" in locked
    for field in ("model", "generationConfig.translationConfig", "inputAudioTranscription"):
        assert field in minted["fieldMask"].split(","), minted["fieldMask"]
    start_by = dt.datetime.fromisoformat(minted["newSessionExpireTime"]).timestamp()
    assert 0 < start_by - time.time() <= 61

    # Asked for by name; refused keys are ours to report.
    named = httpx.post(
        f"{cloud.url}/v1/calls/direct",
        json={"source": "ko", "target": "ja", "provider": "gemini-live-translate"},
    )
    assert named.status_code == 200 and named.json()["provider"] == "gemini-live-translate"
    fake.fault(refuse=True)
    refused = httpx.post(f"{cloud.url}/v1/calls/direct", json=pair)
    assert refused.status_code == 503 and refused.json()["error"] == {
        "code": "provider_refused",
        "message": f"{ERRORS['provider_refused'].removesuffix('.')} (HTTP 403).",
    }


async def test_a_full_fleet_overflows_a_gemini_call_to_gemini_direct(
    cloud: Server, fake: Fake
) -> None:
    holders = [Caller(cloud.url, source="ja", target="en") for _ in range(2)]
    try:
        for h in holders:
            assert (await h.call()).status == 201
        await asyncio.sleep(0.5)
        extra = Caller(cloud.url, source="ja", target="th", provider="gemini-live-translate")
        offer_result = await extra.call()
        await extra.close()
        assert offer_result.status == 200
        body = offer_result.direct
        assert body is not None and body["reason"] == "overflow"
        assert body["provider"] == "gemini-live-translate"
        assert body["client_secret"].startswith("auth_tokens/") and GEMINI_KEY not in str(body)
    finally:
        for h in holders:
            await h.close()


def test_providers_check_reports_each_provider_against_the_fakes(fake: Fake) -> None:
    """The operator's command, end to end through both SDKs (here against the fakes)."""
    env = {
        **os.environ,
        "DRAGOMAN_OPENAI_API_KEY": KEY,
        "DRAGOMAN_OPENAI_BASE_URL": fake.openai_base,
        "DRAGOMAN_GEMINI_API_KEY": GEMINI_KEY,
        "DRAGOMAN_GEMINI_BASE_URL": fake.gemini_base,
        **fake.trusting_env(),
    }
    cmd = [sys.executable, "-m", "dragoman.cli", "providers", "check", "--listen", "1.5"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name in ("openai-translate", "gemini-live-translate"):
        line = next(x for x in ok.stdout.splitlines() if x.startswith(name))
        assert "connected in" in line and "first translated audio" in line, line
    fake.fault(refuse=True)
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "openai-translate: did NOT connect: provider_refused" in refused.stdout
    assert "gemini-live-translate: did NOT connect: provider_refused" in refused.stdout
