"""Short-lived TURN credentials for pages (coturn's REST-API scheme, ``use-auth-secret``).

username = "<expiry unix time>:<label>", credential = base64(HMAC-SHA1(secret, username)).
coturn recomputes the HMAC with the same static-auth-secret and refuses expired names, so
the secret never leaves the server and a leaked credential dies within ``ttl_s``. Pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def turn_credentials(secret: str, label: str, now_s: float, ttl_s: int) -> tuple[str, str]:
    username = f"{int(now_s) + ttl_s}:{label}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    urls: list[str], secret: str | None, label: str, now_s: float, ttl_s: int
) -> dict[str, Any]:
    """The body of ``GET /v1/ice-servers``: what a page passes to RTCPeerConnection."""
    if not urls or not secret:
        return {"iceServers": [], "ttl_s": None}
    username, credential = turn_credentials(secret, label, now_s, ttl_s)
    return {
        "iceServers": [{"urls": urls, "username": username, "credential": credential}],
        "ttl_s": ttl_s,
    }
