"""Abuse limits as pure decisions: request rates (GCRA, ``dragoman.rate``) and concurrent
calls per key.

The registry stores the state (in memory under ``serve``, in Redis for a fleet, so every
api replica sees the same counts); these functions decide. A key names who is limited,
e.g. ``calls:ip:203.0.113.7`` or ``calls:sub:alice``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RateRule:
    """``limit`` requests per ``window_s`` on average; after a quiet spell, up to ``limit``
    at once (a user who retries quickly is not refused), then one per ``window_s / limit``."""

    key: str
    limit: int
    window_s: float


@dataclass(frozen=True)
class ConcurrencyRule:
    """At most ``limit`` calls of this key at once."""

    key: str
    limit: int


LIVE, ENDED, UNKNOWN = "live", "ended", "unknown"  # a held call, as the registry knows it


def live_holds(
    holds: dict[str, float],
    now: float,
    status: dict[str, str],
    max_age_s: float,
    pending_s: float,
) -> dict[str, float]:
    """The calls still counted against a concurrency key.

    ``holds`` maps call id → when it was admitted; ``status`` says what the registry knows
    of each: LIVE (reserved or running on a live node), ENDED (released lately) or UNKNOWN.
    A just-admitted call is UNKNOWN until it is reserved, so that counts for ``pending_s``;
    nothing counts past ``max_age_s`` (the longest a call may last), so a hold whose end was
    never seen (a node that vanished) frees itself.
    """
    return {
        call_id: at
        for call_id, at in holds.items()
        if now - at <= max_age_s
        and (
            status.get(call_id) == LIVE
            or (status.get(call_id, UNKNOWN) == UNKNOWN and now - at <= pending_s)
        )
    }


def client_address(peer: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The caller's address: the TCP peer, or the entry ``trusted_hops`` from the right of
    ``X-Forwarded-For`` when that many proxies we run append to it (a client can forge the
    left part of the header, never what our own proxies appended)."""
    if trusted_hops > 0 and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops]
    return peer or "unknown"
