"""A bound on repeated log lines relayed from a child (Janus' ``[ERR]`` lines).

Janus logs some failures once per packet: a soak saw ``ice.c … only sent -1 bytes? (was 33)``
4,792 times, on every live call at once, until each call ended. The first few lines of a kind
say what happened; the rest only fill the log. Lines of a kind (the line with its numbers
taken out, so per-handle ids and byte counts do not make each one new) are relayed ``first``
times, then summarised at most once per ``every_s``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBERS = re.compile(r"-?\d+")


def kind_of(line: str) -> str:
    """The line with its numbers (ids, counts, timestamps) replaced by '#'."""
    return _NUMBERS.sub("#", line)


@dataclass
class _Seen:
    relayed: int = 0
    held: int = 0  # suppressed since the last summary
    summary_at: float = 0.0


@dataclass
class RepeatLimiter:
    first: int = 3
    every_s: float = 60.0
    max_kinds: int = 256  # forget the oldest kinds beyond this (a bound on our own memory)
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def admit(self, line: str, now: float) -> str | None:
        """What to log for ``line`` at ``now`` (monotonic seconds): the line, a summary of
        the ones held back, or None."""
        key = kind_of(line)
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_kinds:
                self._seen.pop(next(iter(self._seen)))
            seen = self._seen[key] = _Seen()
        if seen.relayed < self.first:
            seen.relayed += 1
            seen.summary_at = now
            return line
        seen.held += 1
        if now - seen.summary_at < self.every_s:
            return None
        held, seen.held, seen.summary_at = seen.held, 0, now
        return f"{line} (and {held - 1} more like it in the last {self.every_s:.0f} s)"
