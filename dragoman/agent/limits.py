"""Per-call limits as a pure decision over plain numbers (the watchdog only gathers them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallLimits:
    max_call_s: float
    no_media_timeout_s: float
    connect_timeout_s: float
    memory_limit_mb: int


@dataclass(frozen=True)
class CallVitals:
    now: float
    started_at: float
    connected_at: float | None
    last_media_at: float | None
    rss_mb: float


def limit_exceeded(limits: CallLimits, v: CallVitals) -> str | None:
    """The end reason for the first limit this call breaks, or None."""
    if v.rss_mb > limits.memory_limit_mb:
        return "memory_limit"
    if v.now - v.started_at > limits.max_call_s:
        return "max_duration"
    if v.connected_at is None:
        if v.now - v.started_at > limits.connect_timeout_s:
            return "connect_timeout"
        return None
    last = v.last_media_at if v.last_media_at is not None else v.connected_at
    if v.now - last > limits.no_media_timeout_s:
        return "no_media"
    return None
