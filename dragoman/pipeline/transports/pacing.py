"""How punctually the agent's outgoing audio leaves: the real-time health of a call.

The agent sends one Opus packet per period (``agent_ptime_ms``) from a timer on its loop
(``transports.rtp_media``). On a saturated CPU the loop wakes late and packets leave late; the
caller hears gaps. Every send is timed against its slot: a packet is "late" when it leaves
more than 20 ms after its slot, which a browser's jitter buffer no longer
hides without stretching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LATE_S = 0.020


@dataclass
class PacingStats:
    frames: int = 0
    late: int = 0
    max_late_ms: float = 0.0
    # Counted since the last report (the worker turns these into Prometheus counters).
    _reported_frames: int = field(default=0, repr=False)
    _reported_late: int = field(default=0, repr=False)

    def record(self, lateness_s: float) -> None:
        self.frames += 1
        if lateness_s > LATE_S:
            self.late += 1
        self.max_late_ms = max(self.max_late_ms, lateness_s * 1000)

    def take_delta(self) -> tuple[int, int]:
        """Frames and late frames since the previous call."""
        d = (self.frames - self._reported_frames, self.late - self._reported_late)
        self._reported_frames, self._reported_late = self.frames, self.late
        return d
