"""The agent's own voice is not a new speaker: a pure check.

In simultaneous mode the translation plays while the person is still talking, often from the
device they talk into, so the consecutive echo gate (close the input while the agent
speaks) cannot apply: it would cut the speaker. The browser's echo canceller removes most of
the leak; what is left comes back as the agent's own words — Whisper's translate task turns
English speech into the same English — during or just after its voice. So a piece of
committed words whose audio overlaps the agent's voice (plus a tail) and repeats, in order,
most of one of the pieces the agent just said is dropped, never spoken nor captioned. A speaker who
happens to say the same words while the agent is quiet is never dropped.
"""

from __future__ import annotations

from difflib import SequenceMatcher

from dragoman.pipeline.providers.local.simultaneous.agreement import norm

ECHO_TAIL_S = 1.0  # reverberation and the canceller settling, and Whisper's timing slack
MATCH_SHARE = 0.6


def overlaps_voice(
    start: float, end: float, voice: list[tuple[float, float]], tail_s: float = ECHO_TAIL_S
) -> bool:
    """Whether [start, end] (audio clock) overlaps any span the agent was heard speaking."""
    return any(start < v_end + tail_s and end > v_start for v_start, v_end in voice)


def repeats_said(words: list[str], said: list[list[str]], share: float = MATCH_SHARE) -> bool:
    """Whether ``words`` are, for the most part, runs of words the agent said in one of its
    recent pieces (``said``: each piece's words). Only runs of two or more words count:
    short words any English sentence shares ("the", "is") are no echo."""
    mine = [k for k in (norm(w) for w in words) if k]
    if len(mine) < 2:
        return False
    for piece in said:
        theirs = [k for k in (norm(w) for w in piece) if k]
        matcher = SequenceMatcher(a=mine, b=theirs, autojunk=False)
        covered = sum(b.size for b in matcher.get_matching_blocks() if b.size >= 2)
        if covered / len(mine) >= share:
            return True
    return False
