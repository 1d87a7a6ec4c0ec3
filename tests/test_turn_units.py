"""TURN REST credentials and the ICE servers a page gets (``api/turn.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from dragoman.api.turn import ice_servers, turn_credentials


# --- TURN credentials ----------------------------------------------------------------------
def test_turn_credentials_follow_coturns_rest_scheme() -> None:
    user, cred = turn_credentials("s3cret", "abcd", now_s=1_000_000.0, ttl_s=300)
    assert user == "1000300:abcd"
    expected = hmac.new(b"s3cret", user.encode(), hashlib.sha1).digest()
    assert base64.b64decode(cred) == expected
    body = ice_servers(["turn:t.example:3478?transport=tcp"], "s3cret", "abcd", 1e6, 300)
    assert body["iceServers"][0]["username"] == user and body["ttl_s"] == 300
    assert ice_servers([], "s3cret", "x", 1e6, 300) == {"iceServers": [], "ttl_s": None}
    assert ice_servers(["turn:x"], None, "x", 1e6, 300)["iceServers"] == []
