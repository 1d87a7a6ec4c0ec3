"""The page's ``ice_restart`` message as the worker reads it (tests/test_network_change.py
drives real ones through Chromium and Janus)."""

from __future__ import annotations

import pytest

from dragoman.contract import page
from dragoman.worker.calls.ice_restart import offer_problem

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 3 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:efgh",
        "a=ice-pwd:zyxwvutsrqponmlkjihgfe",
        "a=fingerprint:sha-256 AA:BB",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host",
    ]
)


def test_an_ice_restart_carries_one_offer_of_bounded_size() -> None:
    msg = page.parse_ice_restart({"v": 1, "type": "ice_restart", "sdp": OFFER, "extra": 1})
    assert msg.sdp == OFFER and msg.id is None
    assert page.parse_ice_restart({"v": 1, "type": "ice_restart", "sdp": OFFER, "id": "r2"}).id
    bad = [
        "not an object",
        {"type": "ice_restart", "sdp": OFFER},  # no version
        {"v": 1, "type": "ice_restart"},
        {"v": 1, "type": "ice_restart", "sdp": ""},
        {"v": 1, "type": "ice_restart", "sdp": 42},
        {"v": 1, "type": "ice_restart", "sdp": "v=0" + "x" * page.MAX_ICE_SDP_CHARS},
        {"v": 1, "type": "ice_restart", "sdp": OFFER, "id": 2},
        {"v": 1, "type": "ice_restart", "sdp": OFFER, "id": "r" * 65},
    ]
    for raw in bad:
        with pytest.raises(page.BadMessage):
            page.parse_ice_restart(raw)
    # The node answers it; the agent's parser never takes one.
    assert "ice_restart" in page.NODE_TYPES
    with pytest.raises(page.BadMessage, match="unknown message type"):
        page.parse_control({"v": 1, "type": "ice_restart", "sdp": OFFER})


def test_the_answer_goes_back_as_an_ice_answer_with_the_restarts_id() -> None:
    assert page.ice_answer("v=0\r\n") == {"v": 1, "type": "ice_answer", "sdp": "v=0\r\n"}
    assert page.ice_answer("v=0\r\n", "r3")["id"] == "r3"


@pytest.mark.parametrize(
    ("sdp", "why"),
    [
        ("hello", "v=0"),
        (OFFER.replace("a=ice-ufrag:efgh\r\n", ""), "ICE credentials"),
        (OFFER.replace("m=audio", "m=video"), "video"),
        (OFFER.replace("opus/48000", "speex/48000"), "payload type 111"),
        (OFFER.replace("111", "109"), "payload type 111"),
    ],
)
def test_a_restart_offer_must_be_webrtc_and_keep_the_calls_opus(sdp: str, why: str) -> None:
    assert offer_problem(OFFER, 111) is None
    problem = offer_problem(sdp, 111)
    assert problem is not None and why in problem and problem.startswith("ice_restart:")
