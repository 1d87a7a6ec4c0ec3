"""Pure pieces: language pairs, the control protocol, per-call limits, SDP checks."""

from __future__ import annotations

import pytest

from dragoman.agent.limits import CallLimits, CallVitals, limit_exceeded
from dragoman.config import Settings
from dragoman.contract import page
from dragoman.contract.errors import InterpretationError
from dragoman.contract.page import Hangup, SetLanguages
from dragoman.languages import LanguageError, validate_pair
from dragoman.media.offer_sdp import SdpError, check_offer
from dragoman.pipeline.providers.catalog import PROVIDERS, catalogue, resolve_interpretation
from dragoman.worker.agents.pool import idle_target


def test_validate_pair_accepts_local_pairs_and_rejects_the_rest() -> None:
    assert validate_pair("ja", "en").source == "ja"
    with pytest.raises(LanguageError) as e:
        validate_pair("xx", "en")
    assert e.value.code == "unknown_language"
    with pytest.raises(LanguageError) as e:
        validate_pair("en", "en")
    assert e.value.code == "same_language"
    with pytest.raises(LanguageError) as e:
        validate_pair("en", "ko")
    assert e.value.code == "unsupported_pair" and "Korean" in e.value.message
    with pytest.raises(LanguageError):
        validate_pair(None, "en")


def test_catalogue_marks_targets_that_need_a_provider() -> None:
    cat = catalogue(Settings())
    by_code = {t["code"]: t for t in cat["targets"]}
    assert by_code["en"]["available"] is True
    assert by_code["ja"]["available"] is False and "provider" in by_code["ja"]["reason"]
    assert {s["code"] for s in cat["sources"]} >= {"ja", "en", "ko", "zh"}


def test_interpretation_defaults_by_call_mode_and_is_checked_against_the_provider() -> None:
    local, translate = PROVIDERS["local"], PROVIDERS["openai-translate"]
    cascade = PROVIDERS["openai-cascade"]
    # Simultaneous where it can be; a conversation (one shared device) keeps its turns.
    assert resolve_interpretation(local, "one_way") == "simultaneous"
    assert resolve_interpretation(local, "room") == "simultaneous"
    assert resolve_interpretation(cascade, "conversation") == "consecutive"
    assert resolve_interpretation(local, "one_way", "consecutive") == "consecutive"
    assert resolve_interpretation(cascade, "room", "consecutive") == "consecutive"
    assert resolve_interpretation(translate, "one_way", "simultaneous") == "simultaneous"
    for spec, mode, asked, code, words in (
        (translate, "one_way", "consecutive", "unsupported_interpretation", "only simul"),
        (PROVIDERS["gemini-live-translate"], "room", "consecutive", "unsupported", "Gemini"),
        (local, "conversation", "simultaneous", "unsupported_interpretation", "turn by turn"),
        (local, "one_way", "whispered", "bad_interpretation", "'simultaneous' or"),
        (local, "one_way", 3, "bad_interpretation", "Unknown interpretation"),
    ):
        with pytest.raises(InterpretationError) as e:
            resolve_interpretation(spec, mode, asked)
        assert e.value.code.startswith(code) and words in e.value.message
        assert e.value.status == 400


def test_catalogue_says_which_interpretations_each_provider_has() -> None:
    cat = catalogue(Settings())
    assert cat["interpretation_defaults"] == {
        "one_way": "simultaneous",
        "conversation": "consecutive",
        "room": "simultaneous",
    }
    by_name = {p["name"]: p for p in cat["providers"]}
    for name in ("local", "openai-cascade"):
        assert by_name[name]["interpretations"] == ["simultaneous", "consecutive"]
        assert "interpretation_reason" not in by_name[name]
    for name in ("openai-translate", "gemini-live-translate"):
        assert by_name[name]["interpretations"] == ["simultaneous"]
        assert "only simultaneously" in by_name[name]["interpretation_reason"]
        assert "conversation" not in by_name[name]["interpretation_defaults"]
    assert by_name["local"]["interpretation_defaults"]["conversation"] == "consecutive"


def test_parse_control_messages() -> None:
    assert page.parse_control({"v": 1, "type": "hangup"}) == Hangup()
    assert page.parse_control(
        {"v": 1, "type": "set_languages", "source": "ko", "target": "en"}
    ) == SetLanguages(source="ko", target="en")
    for bad in (
        "hangup",
        {"type": "hangup"},
        {"v": 2, "type": "hangup"},
        {"v": 1, "type": "dance"},
        {"v": 1, "type": "set_languages", "source": 3, "target": "en"},
    ):
        with pytest.raises(page.BadMessage):
            page.parse_control(bad)


def test_state_message_carries_a_readable_reason() -> None:
    msg = page.state("ended", "no_media")
    assert msg["reason"] == "no_media" and "audio" in msg["message"]


LIMITS = CallLimits(max_call_s=60, no_media_timeout_s=5, connect_timeout_s=3, memory_limit_mb=100)


def vitals(**kw: float | None) -> CallVitals:
    base = dict(now=10.0, started_at=0.0, connected_at=1.0, last_media_at=9.0, rss_mb=50.0)
    base.update(kw)
    return CallVitals(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({}, None),
        ({"rss_mb": 101}, "memory_limit"),
        ({"now": 61, "last_media_at": 60.5}, "max_duration"),
        ({"connected_at": None, "last_media_at": None, "now": 2.0}, None),
        ({"connected_at": None, "last_media_at": None, "now": 3.5}, "connect_timeout"),
        ({"last_media_at": 4.0}, "no_media"),
        ({"last_media_at": None, "connected_at": 4.0}, "no_media"),
        ({"last_media_at": None, "connected_at": 6.0}, None),
    ],
)
def test_limit_exceeded(kw: dict, reason: str | None) -> None:
    assert limit_exceeded(LIMITS, vitals(**kw)) == reason


OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=fingerprint:sha-256 00:11",
        "a=rtpmap:111 opus/48000/2",
    ]
)


def test_check_offer() -> None:
    check_offer(OFFER)
    for bad, why in (
        ("hello", "v=0"),
        (OFFER.replace("m=audio", "m=video"), "audio"),
        (OFFER.replace("a=ice-ufrag:abcd", "a=x"), "ICE"),
        (OFFER.replace("a=fingerprint", "a=fp"), "fingerprint"),
        (OFFER + "\r\nnot sdp", "not an SDP line"),
        ("v=0\r\n" + "a=x\r\n" * 20000, "characters"),
    ):
        with pytest.raises(SdpError, match=why):
            check_offer(bad)


def test_idle_target_covers_free_slots_within_memory_budget() -> None:
    assert idle_target(Settings(max_calls=8, idle_memory_budget_mb=1000)) == 8
    assert idle_target(Settings(max_calls=64, idle_memory_budget_mb=600)) == 10
    assert idle_target(Settings(max_calls=8, idle_target=2)) == 2
