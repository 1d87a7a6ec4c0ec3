"""Admission policy as pure functions: the rate algorithm, concurrency holds, the client's
address behind proxies, call tickets and the SDP caps."""

from __future__ import annotations

import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dragoman.api.tickets import TicketError, mint, mint_control, verify, verify_control
from dragoman.fleet.limits import ENDED, LIVE, client_address, live_holds
from dragoman.media.offer_sdp import MAX_CANDIDATES, SdpError, check_offer
from dragoman.rate import gcra

SECRET = "unit-test-secret-0123456789abcdef0123456789"


@given(
    limit=st.integers(1, 50),
    window=st.floats(1, 3600),
    gaps=st.lists(st.floats(0, 100), min_size=1, max_size=200),
)
def test_gcra_allows_a_burst_of_the_limit_then_the_rate_and_no_more(
    limit: int, window: float, gaps: list[float]
) -> None:
    interval = window / limit
    tat, now, allowed = None, 0.0, []
    for gap in gaps:
        now += gap
        wait, tat = gcra(tat, now, limit, window)
        assert wait >= 0
        if wait == 0:
            allowed.append(now)
        else:  # refused exactly until the next request would conform
            assert gcra(tat, now + wait + 1e-6, limit, window)[0] == 0
    # Between any two allowed requests: at most a burst of `limit` plus the steady rate.
    for i, t in enumerate(allowed):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= limit + (allowed[j] - t) / interval + 1e-6


def test_gcra_burst_then_steady_rate() -> None:
    tat = None
    for _ in range(3):
        wait, tat = gcra(tat, 0.0, 3, 60)
        assert wait == 0
    wait, tat2 = gcra(tat, 0.0, 3, 60)
    assert wait == pytest.approx(20.0) and tat2 == tat  # refused: state unchanged
    assert gcra(tat, 20.0, 3, 60)[0] == 0


def test_live_holds_count_known_calls_and_fresh_admissions_only() -> None:
    holds = {"running": 0.0, "new": 95.0, "lost": 50.0, "ended": 99.0, "ancient": -1000.0}
    status = {"running": LIVE, "ended": ENDED, "ancient": LIVE}
    kept = live_holds(holds, 100.0, status, max_age_s=600, pending_s=10)
    assert set(kept) == {"running", "new"}


@pytest.mark.parametrize(
    ("peer", "xff", "hops", "want"),
    [
        ("10.0.0.5", None, 0, "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4", 0, "10.0.0.5"),  # not behind a proxy: the header is ignored
        ("10.0.0.5", "6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),  # the client forged the left part
        ("10.0.0.5", "1.2.3.4, 172.16.0.1", 2, "1.2.3.4"),  # CDN then ingress
        ("10.0.0.5", "", 1, "10.0.0.5"),
    ],
)
def test_client_address(peer: str, xff: str | None, hops: int, want: str) -> None:
    assert client_address(peer, xff, hops) == want


def test_tickets_carry_their_claims() -> None:
    token = mint(SECRET, "alice", 300, providers=["local"], direct=True, max_call_s=120)
    t = verify(token, SECRET, max_ttl_s=3600, leeway_s=0)
    assert t.subject == "alice" and t.direct and t.max_call_s == 120
    assert t.allows_provider("local") and not t.allows_provider("openai-translate")
    assert verify(mint(SECRET, "bob", 60), SECRET, 3600, 0).allows_provider("anything")


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: mint(SECRET, "a", 60, now=time.time() - 120), "ticket_expired"),
        (lambda: mint("x" * 40, "a", 60), "bad_ticket"),
        (lambda: mint(SECRET, "a", 7200), "bad_ticket"),  # longer than allowed
        (lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, "HS256"), "bad_ticket"),
        (lambda: jwt.encode({"sub": "a", "exp": time.time() + 60}, None, "none"), "bad_ticket"),
        (
            lambda: jwt.encode(
                {"sub": "a", "exp": int(time.time()) + 60, "direct": "yes"}, SECRET, "HS256"
            ),
            "bad_ticket",
        ),
        (lambda: mint_control(SECRET, "a", "call-1", 60), "ticket_scope"),
        (lambda: "not.a.jwt", "bad_ticket"),
    ],
)
def test_bad_tickets_are_refused_with_a_reason(make, code: str) -> None:
    with pytest.raises(TicketError) as info:
        verify(make(), SECRET, max_ttl_s=3600, leeway_s=0)
    assert info.value.code == code and info.value.message


def test_a_control_token_opens_only_its_own_call() -> None:
    token = mint_control(SECRET, "alice", "call-1", 60)
    verify_control(token, SECRET, "call-1", 0)
    for bad, call in ((token, "call-2"), (mint(SECRET, "alice", 60), "call-1")):
        with pytest.raises(TicketError):
            verify_control(bad, SECRET, call, 0)


OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuv",
        "a=fingerprint:sha-256 AA:BB",
        "a=rtpmap:111 opus/48000/2",
        "a=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host",
    ]
)
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2"


@pytest.mark.parametrize(
    ("sdp", "why"),
    [
        (OFFER + "\r\n" + "\r\n".join([AUDIO] * 19), "audio"),
        (OFFER + "\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel" * 2, "application"),
        (OFFER + "\r\nm=video 9 UDP/TLS/RTP/SAVPF 96", "video"),
        (OFFER + "\r\na=candidate:2 1 udp 1 192.0.2.2 1 typ host" * (MAX_CANDIDATES + 1), "ICE"),
        (OFFER + "\r\na=x:y" * 400, "lines"),
        (OFFER + "\r\na=x:" + "y" * 2000, "over"),
    ],
)
def test_sdp_caps(sdp: str, why: str) -> None:
    check_offer(OFFER)
    check_offer(OFFER + "\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel")
    with pytest.raises(SdpError, match=why):
        check_offer(sdp)
