"""Puts a call's incoming RTP back in sequence order and says which packets were lost.

Speech recognition does not need a playout clock, only audio in order with the gaps
concealed, so nothing is delayed while packets arrive in order: a packet is held only
while one before it is missing, and a gap is declared lost once ``max_hold`` later packets
have arrived (60 ms at 20 ms per packet). Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SEQ_MOD = 1 << 16
RESET_DISTANCE = 3000  # a jump this far (either way) is a new stream, not reordering


class Slot(NamedTuple):
    """One 20 ms slot of the stream: ``payload`` to decode, or None when the packet was
    lost; then ``fec`` is the next packet, whose in-band FEC can rebuild the lost one."""

    payload: bytes | None
    fec: bytes | None = None


@dataclass
class ReorderStats:
    received: int = 0
    lost: int = 0
    late: int = 0  # arrived after its slot was declared lost (or a duplicate)
    reordered: int = 0  # arrived after later packets, still in time for its slot


def _distance(seq: int, ref: int) -> int:
    """Signed distance seq - ref on the 16-bit sequence circle."""
    d = (seq - ref) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


class ReorderBuffer:
    def __init__(self, max_hold: int = 3, max_conceal: int = 5) -> None:
        self.max_hold = max_hold
        self.max_conceal = max_conceal  # longer gaps are skipped, not filled with PLC
        self.stats = ReorderStats()
        self._next: int | None = None
        self._held: dict[int, bytes] = {}

    def push(self, seq: int, payload: bytes) -> list[Slot]:
        """Add a packet; returns the slots now ready, in order."""
        self.stats.received += 1
        if self._next is None:
            self._next = seq
        d = _distance(seq, self._next)
        if abs(d) >= RESET_DISTANCE:
            out = self._flush()
            self._next = seq
            d = 0
            self._held[seq] = payload
            return out + self._release()
        if d < 0 or seq in self._held:
            self.stats.late += 1
            return []
        if d == 0 and self._held:
            self.stats.reordered += 1  # it fills the gap the held packets were waiting on
        self._held[seq] = payload
        return self._release()

    def _release(self) -> list[Slot]:
        out: list[Slot] = []
        assert self._next is not None
        while self._held:
            payload = self._held.pop(self._next, None)
            if payload is not None:
                out.append(Slot(payload))
                self._next = (self._next + 1) % SEQ_MOD
                continue
            ahead = [_distance(s, self._next) for s in self._held]
            if max(ahead) < self.max_hold:
                break  # a missing packet may still come: wait for it
            gap = min(ahead)
            for i in range(min(gap, self.max_conceal)):
                following = self._held.get((self._next + i + 1) % SEQ_MOD)
                out.append(Slot(None, following))
            self.stats.lost += gap
            self._next = (self._next + gap) % SEQ_MOD
        return out

    def _flush(self) -> list[Slot]:
        """Everything held, in order (the stream restarted)."""
        assert self._next is not None
        ref = self._next
        ordered = sorted(self._held.items(), key=lambda kv: _distance(kv[0], ref))
        self._held.clear()
        return [Slot(p) for _, p in ordered]
