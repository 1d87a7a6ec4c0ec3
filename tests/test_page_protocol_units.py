"""The page protocol's typed models put on the wire exactly the JSON the page has always read
(key order included), and page → agent messages parse into them."""

from __future__ import annotations

import json

import pytest

from dragoman.contract import page
from dragoman.languages import LanguagePair


def test_agent_messages_keep_their_wire_shape() -> None:
    assert json.dumps(page.caption("u1", "source", "ja", "こんにちは", False, 10, 20)) == (
        json.dumps(
            {
                "v": 1,
                "type": "caption",
                "id": "u1",
                "side": "source",
                "lang": "ja",
                "final": False,
                "text": "こんにちは",
                "t_start_ms": 10,
                "t_end_ms": 20,
            }
        )
    )
    assert list(page.state("listening")) == ["v", "type", "state"]
    assert page.state("ended", "hangup") == {
        "v": 1,
        "type": "state",
        "state": "ended",
        "reason": "hangup",
        "message": "You hung up.",
    }
    assert list(page.languages(LanguagePair("ja", "en"))) == [
        "v",
        "type",
        "source",
        "target",
        "mode",
    ]
    assert list(page.note("u1", "c", "m")) == ["v", "type", "id", "code", "message"]
    assert page.metrics("u1", {"vad_stop": 1.234567}) == {
        "v": 1,
        "type": "metrics",
        "id": "u1",
        "marks": {"vad_stop": 1.2346},
    }
    assert list(page.error("x", "y")) == ["v", "type", "code", "message", "fatal"]


def test_new_fields_follow_the_old_ones_only_when_set() -> None:
    partial = page.caption("u1", "translation", "en", "Hello there", False, 0, 0, stable=6)
    assert list(partial)[-2:] == ["t_end_ms", "stable"] and partial["stable"] == 6
    langs = page.languages(LanguagePair("ja", "en"), "consecutive")
    assert list(langs) == ["v", "type", "source", "target", "mode", "interpretation"]
    assert langs["interpretation"] == "consecutive"


def test_page_messages_parse_into_the_models() -> None:
    msg = page.parse_control(
        {"v": 1, "type": "set_languages", "source": "ko", "target": "en", "extra": 1}
    )
    assert isinstance(msg, page.SetLanguages) and (msg.source, msg.target) == ("ko", "en")
    assert isinstance(page.parse_control({"v": 1, "type": "hangup"}), page.Hangup)
    with pytest.raises(page.BadMessage, match="string 'source'"):
        page.parse_control({"v": 1, "type": "set_languages", "source": "ko"})
    msg = page.parse_control({"v": 1, "type": "set_interpretation", "interpretation": "x"})
    # Any string parses: the agent's policy refuses an unknown one with its reason.
    assert isinstance(msg, page.SetInterpretation) and msg.interpretation == "x"
    with pytest.raises(page.BadMessage, match="string 'interpretation'"):
        page.parse_control({"v": 1, "type": "set_interpretation", "interpretation": 1})


def test_talk_controls_parse_and_refuse_what_is_not_a_boolean() -> None:
    on = page.parse_control({"v": 1, "type": "push_to_talk", "on": True})
    assert isinstance(on, page.PushToTalk) and on.on is True
    held = page.parse_control({"v": 1, "type": "talk", "held": False})
    assert isinstance(held, page.Talk) and held.held is False
    assert isinstance(page.parse_control({"v": 1, "type": "interpret_now"}), page.InterpretNow)
    # "true" or 1 is not a press: a page that sends them has a bug worth hearing about.
    with pytest.raises(page.BadMessage, match="boolean 'held'"):
        page.parse_control({"v": 1, "type": "talk", "held": "true"})
    with pytest.raises(page.BadMessage, match="boolean 'on'"):
        page.parse_control({"v": 1, "type": "push_to_talk", "on": 1})
    with pytest.raises(page.BadMessage, match="boolean 'on'"):
        page.parse_control({"v": 1, "type": "push_to_talk"})
    assert page.talk(True, False) == {"v": 1, "type": "talk", "push_to_talk": True, "held": False}
    refusal = page.error("unsupported_control", page.ERRORS["unsupported_control"])
    assert refusal["code"] == "unsupported_control" and "push-to-talk" in refusal["message"]
