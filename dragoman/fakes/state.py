"""What a fake server remembers and how a test steers it."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """Misbehaviour a test asks for; applies to sessions opened after it is set."""

    refuse: bool = False  # reject the key (HTTP 401) before the WebSocket upgrade
    drop_after_s: float | None = None  # close the socket abruptly this long into a session
    stall_after_s: float | None = None  # stop answering anything (pings included)
    # Send a provider error event this long into a session; REST endpoints answer HTTP 500.
    error_after_s: float | None = None
    error_fatal: bool = True  # False: a recoverable error event, once, and the session goes on
    # The provider's own words in its error answers and events (default: a fixed fake text);
    # tests put a marker here to check it reaches the server log and never the caller.
    error_message: str | None = None

    def message(self, default: str) -> str:
        return self.error_message if self.error_message is not None else default


@dataclass
class FakeState:
    api_key: str
    gemini_key: str | None = None
    fault: Fault = field(default_factory=Fault)
    # Direct-mode client secrets minted: value → expiry (epoch seconds).
    secrets: dict[str, float] = field(default_factory=dict)
    # The session config each secret locks (value → session).
    locked: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Gemini ephemeral tokens: name → {setup, mask, uses, expires, new_session_expires}.
    gemini_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    # One entry per session opened, for tests to check what our side sent.
    sessions: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    # Realtime transcription items with words heard and not yet committed (item → words so
    # far): the caller is still talking (the cascade fake notes it on each request made).
    transcribing: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def mint_secret(self, ttl_s: float) -> tuple[str, int]:
        value = "ek_fake_" + secrets.token_hex(12)
        expires = int(time.time() + ttl_s)
        self.secrets[value] = expires
        return value, expires

    def bearer_ok(self, header: str | None, allow_secret: bool) -> bool:
        token = (header or "").removeprefix("Bearer ").strip()
        if self.fault.refuse:
            return False
        if token == self.api_key:
            return True
        return allow_secret and self.secrets.get(token, 0) > time.time()

    def snapshot(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "counters": self.counters,
            "secrets_minted": len(self.secrets),
        }
