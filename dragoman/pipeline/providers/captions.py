"""Turns a provider's append-only transcript deltas into the page's caption lines.

Streaming providers send text as a continuous stream with no sentence ids. A line is
closed (final) after a pause in the deltas, and the next delta opens a new line. The n-th
translation line shares its id with the n-th source line, so the page shows each
translation under what was said. Pure: the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

GAP_S = 1.2  # a pause in the stream this long ends a caption line


@dataclass
class CaptionLine:
    uid: str
    text: str
    final: bool
    t_start_ms: int
    t_end_ms: int


class CaptionStream:
    def __init__(self, gap_s: float = GAP_S) -> None:
        self._gap_s = gap_s
        self._seq = 0
        self._open: CaptionLine | None = None
        self._last_at = 0.0

    def add(self, delta: str, now_s: float) -> CaptionLine | None:
        """Append a delta; returns the line as it stands (not final), or None if empty."""
        if not delta:
            return None
        if self._open is None:
            self._seq += 1
            now_ms = int(now_s * 1000)
            self._open = CaptionLine(f"s{self._seq}", "", False, now_ms, now_ms)
        self._open.text += delta
        self._open.t_end_ms = int(now_s * 1000)
        self._last_at = now_s
        if not self._open.text.strip():
            return None
        return CaptionLine(**vars(self._open))

    def close_if_quiet(self, now_s: float) -> CaptionLine | None:
        """The open line, finalised, once the stream has paused for ``gap_s``."""
        if self._open is None or now_s - self._last_at < self._gap_s:
            return None
        return self.close()

    def close(self) -> CaptionLine | None:
        line, self._open = self._open, None
        if line is None or not line.text.strip():
            return None
        line.text = line.text.strip()
        line.final = True
        return line
