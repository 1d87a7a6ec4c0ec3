"""Abuse limits as pure decisions: request rates (GCRA) and concurrent calls per key.

The registry stores the state (in memory under ``serve``, in Redis for a fleet, so every
api replica sees the same counts); these functions decide. A key names who is limited,
e.g. ``calls:ip:203.0.113.7`` or ``calls:sub:alice``.
"""

from __future__ import annotations

from dataclasses import dataclass

EPSILON_S = 1e-9


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


def gcra(tat: float | None, now: float, limit: int, window_s: float) -> tuple[float, float]:
    """Generic cell rate algorithm: one request against ``limit`` per ``window_s``.

    ``tat`` is the key's theoretical arrival time (None: never seen). Returns
    ``(retry_after_s, new_tat)``: ``retry_after_s`` is 0 when the request is allowed, else
    how long until one would be (and ``new_tat`` is ``tat`` unchanged). One number per key,
    exact at window edges, unlike a fixed window that lets twice the limit through.
    """
    interval = window_s / limit
    base = now if tat is None or tat < now else tat
    new_tat = base + interval
    allow_at = new_tat - window_s  # a burst of `limit` fits in one window
    # (A rounding error's worth late is on time: base + w/l - w can exceed base by 1e-13.)
    if allow_at - now > EPSILON_S:  # only when base is the stored tat: it stays as it was
        return allow_at - now, base
    return 0.0, new_tat


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
