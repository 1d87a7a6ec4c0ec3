"""Keeping pace with the speaker: pure policies.

The interpreter must not fall further and further behind a fast talker. The lag of a piece
of speech — its source audio's end → its voice starting, counting what is still queued for
the caller — sets the voice's speed, and past a higher bound the translations still waiting
are joined into one (fewer sentence-start pauses, one synthesis instead of several).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaceRule:
    relaxed_lag_s: float = 2.5  # at or under this lag the voice keeps its normal speed
    max_speed: float = 1.35  # Piper stays clear well past this, but it sounds hurried
    full_speed_lag_s: float = 5.0  # lag at which the voice reaches max_speed
    join_backlog: int = 2  # pieces waiting for the voice at which new ones are joined


def speed_for(lag_s: float, rule: PaceRule) -> float:
    """The voice's speed for a piece that starts ``lag_s`` after its source audio ended."""
    if lag_s <= rule.relaxed_lag_s:
        return 1.0
    span = max(1e-6, rule.full_speed_lag_s - rule.relaxed_lag_s)
    share = min(1.0, (lag_s - rule.relaxed_lag_s) / span)
    return round(1.0 + share * (rule.max_speed - 1.0), 3)


def should_join(waiting_pieces: int, rule: PaceRule) -> bool:
    """Whether a new piece waits to be joined with the next instead of queueing on its own."""
    return waiting_pieces >= rule.join_backlog


@dataclass
class SpeechBacklog:
    """Shared by the STT stage and the TTS stage of one call: pieces sent for speech that
    the voice has not taken up yet (the TTS counts the ones it takes)."""

    pushed: int = 0
    started: int = 0

    @property
    def waiting(self) -> int:
        return self.pushed - self.started
