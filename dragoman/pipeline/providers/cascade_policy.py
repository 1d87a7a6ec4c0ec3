"""Pure policy of the cascade's simultaneous mode: which part of a growing transcript is
committed for translation, what of it remains when the transcription completes, how much
translated speech is waiting, and how the speech keeps pace. No I/O: callers pass the clock.

Commit (a stability policy over a streamed transcript). The streaming transcription only
appends (a delta never revises earlier text), so a word is stable once the text after it has
begun: whitespace follows it. A piece is committed, as soon as it is speakable, at

1. the last clause or sentence boundary (punctuation followed by a space, or full-width
   punctuation) that closes at least ``min_words`` words;
2. otherwise, every complete word once there are ``max_words`` of them;
3. otherwise, every complete word once the oldest one has waited ``max_wait_s``;
4. text with no spaces at all (Chinese, Japanese) is committed whole by 2. and 3. when it
   holds ``max_words * CHARS_PER_WORD_NO_SPACES`` characters / has waited: its deltas arrive
   in whole characters.

Pace. The backlog is the speech still to be heard: the audio already made and queued ahead
of the caller's ear plus the translated text not yet sent for speech. Past ``faster_after_s``
the voice speeds up (linearly, up to ``max_speed`` at ``join_after_s``); past
``join_after_s`` every waiting piece goes out as one request (fewer requests, less gap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "," "." "!" "?" ";" ":" "…" closing a clause when a space follows (so "3.5" and "e.g." in
# the middle of a delta are not cut); full-width CJK punctuation closes one by itself.
_BOUNDARY = re.compile(r"[.!?;:,…](?=\s)|[。！？；：、，]")
CHARS_PER_WORD_NO_SPACES = 2  # a Japanese/Chinese "word" for the word bounds above


@dataclass(frozen=True)
class CommitPolicy:
    min_words: int = 3
    max_words: int = 8
    max_wait_s: float = 2.0


def _size(text: str) -> float:
    """Words; for text written without spaces (CJK), characters per "word"."""
    t = text.strip()
    if re.search(r"\s", t) or t.isascii():
        return len(t.split())
    return len(t) / CHARS_PER_WORD_NO_SPACES


def next_cut(pending: str, waited_s: float, policy: CommitPolicy) -> int:
    """How many leading characters of ``pending`` (the uncommitted tail of a transcript
    still being spoken) to commit now; 0: none yet."""
    stripped = pending.strip()
    if not stripped:
        return 0
    boundary = 0
    for m in _BOUNDARY.finditer(pending):
        if _size(pending[: m.end()]) >= policy.min_words:
            boundary = m.end()
    if boundary:
        return boundary
    due = waited_s >= policy.max_wait_s
    if not re.search(r"\s", stripped):
        if stripped.isascii():
            return 0  # a single word, perhaps still being spelt
        # A CJK run: its deltas come in whole characters.
        return len(pending) if due or _size(stripped) >= policy.max_words else 0
    # Complete words are those with whitespace after them (the last may still grow).
    if pending[-1].isspace():
        cut = len(pending)
    else:
        cut = max(i for i, c in enumerate(pending) if c.isspace())
    if due or _size(pending[:cut]) >= policy.max_words:
        return cut
    return 0


def remainder(committed: str, transcript: str) -> str:
    """What of a completed ``transcript`` is still to translate after the pieces already
    committed from its deltas. If the final text differs from what the deltas said, the
    committed words are skipped by count (never translated twice)."""
    committed, transcript = committed.strip(), transcript.strip()
    if transcript.startswith(committed):
        return transcript[len(committed) :].strip()
    done = committed.split()
    if done and " ".join(transcript.split()).startswith(" ".join(done)):
        return " ".join(transcript.split()[len(done) :])
    if not re.search(r"\s", transcript.strip()):  # no spaces: skip by characters
        return transcript.strip()[len("".join(done)) :]
    return " ".join(transcript.split()[len(done) :])


@dataclass
class SpeechClock:
    """When the speech made so far will have been heard (estimated from the audio's length:
    the output plays it in real time)."""

    heard_by: float = 0.0

    def add(self, seconds: float, now: float) -> None:
        self.heard_by = max(self.heard_by, now) + seconds

    def ahead(self, now: float) -> float:
        """Seconds of speech made but not yet heard."""
        return max(0.0, self.heard_by - now)


@dataclass(frozen=True)
class PacePolicy:
    faster_after_s: float = 3.0
    join_after_s: float = 6.0
    max_speed: float = 1.3
    chars_per_s: float = 14.0  # how fast waiting text will be spoken, at speed 1


@dataclass(frozen=True)
class Pace:
    speed: float  # the TTS ``speed`` for the next request (1.0: normal)
    join: bool  # send every waiting piece as one request


def backlog_s(ahead_s: float, waiting_chars: int, policy: PacePolicy) -> float:
    """Speech still to be heard: made and queued (``ahead_s``) plus waiting text."""
    return ahead_s + waiting_chars / policy.chars_per_s


def pace_for(backlog: float, policy: PacePolicy) -> Pace:
    if backlog <= policy.faster_after_s:
        return Pace(1.0, False)
    span = max(policy.join_after_s - policy.faster_after_s, 1e-6)
    ramp = min(1.0, (backlog - policy.faster_after_s) / span)
    return Pace(round(1.0 + ramp * (policy.max_speed - 1.0), 2), backlog > policy.join_after_s)


@dataclass
class ItemText:
    """One transcription item (the words between two commits of the audio): its text so far
    from the deltas, and how much of it has been committed for translation."""

    uid: str
    t_start_ms: int
    t_end_ms: int = 0
    text: str = ""
    committed: int = 0  # leading characters of ``text`` already committed
    waiting_since: float | None = None  # when the oldest uncommitted text arrived
    completed: bool = False
    rest: str = ""  # once completed: what is left to translate

    def add(self, delta: str, now: float, now_ms: int) -> None:
        self.text += delta
        self.t_end_ms = now_ms
        if self.waiting_since is None and delta.strip():
            self.waiting_since = now

    def take(self, policy: CommitPolicy, now: float) -> str:
        """The next piece the policy commits now ("" when none)."""
        pending = self.text[self.committed :]
        waited = 0.0 if self.waiting_since is None else now - self.waiting_since
        cut = next_cut(pending, waited, policy)
        if not cut:
            return ""
        self.committed += cut
        rest = self.text[self.committed :]
        self.waiting_since = now if rest.strip() else None
        return pending[:cut].strip()

    def finish(self, transcript: str, now_ms: int) -> str:
        """The item is complete: the rest of ``transcript`` still to translate."""
        rest = remainder(self.text[: self.committed], transcript.strip())
        self.text, self.committed = transcript.strip(), len(transcript.strip())
        self.completed, self.t_end_ms, self.waiting_since = True, now_ms, None
        self.rest = rest
        return rest
