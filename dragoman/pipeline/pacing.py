"""How punctually the agent's outgoing audio leaves: the real-time health of a call.

The output track (Pipecat's RawAudioTrack) hands aiortc one 10 ms frame per ``recv()``,
sleeping until each frame's slot on the track clock. On a saturated CPU the event loop
wakes late and frames leave late; the caller hears gaps. We time every ``recv()`` against
its slot. A frame is "late" when it leaves more than one 20 ms Opus packet after its slot,
which a browser's jitter buffer no longer hides without stretching.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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


class PacingMonitor:
    def __init__(self) -> None:
        self.stats = PacingStats()
        self._attached = False

    def attach(self, transport: Any) -> None:
        """Wrap the output track's ``recv`` once it exists (at client connect)."""
        if self._attached:
            return
        # Pipecat keeps the track on its client object; no public accessor exists.
        track = getattr(getattr(transport, "_client", None), "_audio_output_track", None)
        if track is None or not hasattr(track, "_start"):
            log.warning("pacing: no output audio track to watch")
            return
        self._attached = True
        original = track.recv
        stats = self.stats

        async def timed_recv() -> Any:
            frame = await original()
            slot = track._start + frame.pts / frame.sample_rate
            stats.record(max(0.0, time.time() - slot))
            return frame

        track.recv = timed_recv
