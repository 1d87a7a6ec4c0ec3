"""How punctually the agent's outgoing audio leaves: the real-time health of a call.

The output track (Pipecat's RawAudioTrack) hands aiortc one frame per ``recv()``,
sleeping until each frame's slot on the track clock. On a saturated CPU the event loop
wakes late and frames leave late; the caller hears gaps. We time every ``recv()`` against
its slot. A frame (20 ms, see ``send_20ms_frames``) is "late" when it leaves more than one
Opus packet (20 ms) after its slot, which a browser's jitter buffer no longer hides
without stretching.
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


def send_20ms_frames(transport: Any) -> None:
    """Make the output track hand aiortc 20 ms frames instead of 10 ms ones.

    Opus packets are 20 ms, so with 10 ms frames every other wake-up of the send loop
    (sleep, encode hop, resample) produces nothing. The transport already writes audio in
    20 ms chunks (``audio_out_10ms_chunks=2``), which keeps the track's queue in whole
    frames. Pipecat fixes the frame size in private fields; set them before any audio.
    """
    track = getattr(getattr(transport, "_client", None), "_audio_output_track", None)
    if track is None or getattr(track, "_timestamp", 1) != 0 or track._chunk_queue:
        return  # not Pipecat's RawAudioTrack as we know it, or already sending
    track._samples_per_10ms = track._sample_rate * 20 // 1000
    track._bytes_per_10ms = track._samples_per_10ms * 2
