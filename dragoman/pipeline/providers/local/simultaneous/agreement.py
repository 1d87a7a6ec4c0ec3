"""Which words of a re-decoded hypothesis are stable enough to say: the LocalAgreement policy
of *whisper_streaming* (Macháček et al., 2023), as pure functions over plain data.

Simultaneous mode re-decodes the not-yet-cut audio every step. A word is committed (it will
be translated and spoken) when two consecutive hypotheses agree on it — the longest common
prefix of their new tails —, when the speaker paused after it (a breath settles what came
before), or, so that a hesitant decoder never holds the listener back, when it began longer
ago than ``force_after_s`` (its audio is old enough that more context will not change it
much). Committed words are never withdrawn.

The committed words stay in the audio buffer until a cut (see ``cut_point``), so each new
hypothesis repeats them; what is new is found as *whisper_streaming* does: by the committed
words as a prefix when Whisper repeats them exactly, else by time (words that start after the
last committed word ended) minus a leading n-gram equal to the committed tail.

Times are seconds on the call's audio clock (audio received since the call started).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SENTENCE_END = (".", "?", "!", "。", "？", "！", "．")
CLAUSE_END = (",", ";", ":", "、", "，")
MIN_CUT_S = 0.3
TIME_SLACK_S = 0.1  # word timestamps from cross-attention wobble by about this much
MAX_NGRAM = 5


@dataclass(frozen=True)
class TimedWord:
    start: float
    end: float
    text: str  # as Whisper spells it (leading space included)


@dataclass(frozen=True)
class Agreement:
    """The policy's state between two steps of one call."""

    committed: tuple[TimedWord, ...] = ()  # committed words still inside the audio buffer
    tail: tuple[TimedWord, ...] = ()  # the previous hypothesis's uncommitted words
    last_end: float = 0.0  # where the last committed word ended


@dataclass(frozen=True)
class Step:
    state: Agreement
    agreed: tuple[TimedWord, ...] = ()  # newly committed because two hypotheses agree
    settled: tuple[TimedWord, ...] = ()  # newly committed because a pause follows them
    forced: tuple[TimedWord, ...] = ()  # newly committed because they were too old
    tail: tuple[TimedWord, ...] = field(default=())  # what is still tentative

    @property
    def new(self) -> tuple[TimedWord, ...]:
        return self.agreed + self.settled + self.forced


def norm(text: str) -> str:
    """A word as compared between hypotheses: case and punctuation do not make it new."""
    return re.sub(r"[^\w']+", "", text.lower())


def fresh_words(
    hypothesis: tuple[TimedWord, ...], committed: tuple[TimedWord, ...], last_end: float
) -> tuple[TimedWord, ...]:
    """The words of ``hypothesis`` that come after what is already committed."""
    words = tuple(w for w in hypothesis if norm(w.text))
    keys = [norm(w.text) for w in words]
    done = [norm(w.text) for w in committed]
    if done and keys[: len(done)] == done:
        return words[len(done) :]
    fresh = [w for w in words if w.start > last_end - TIME_SLACK_S]
    # A committed word that Whisper timed a little late shows up again at the front.
    for n in range(min(len(done), len(fresh), MAX_NGRAM), 0, -1):
        if [norm(w.text) for w in fresh[:n]] == done[-n:]:
            return tuple(fresh[n:])
    return tuple(fresh)


def paused_after(words: tuple[TimedWord, ...], i: int, now: float, pause_s: float) -> bool:
    """Whether the speaker paused after ``words[i]``: the next word begins ``pause_s`` later,
    or, with none heard yet, twice that has passed (the last word may still be going on)."""
    if i + 1 < len(words):
        return words[i + 1].start - words[i].end >= pause_s
    return now - words[i].end >= 2 * pause_s


def agree(
    state: Agreement,
    hypothesis: tuple[TimedWord, ...],
    now: float,
    force_after_s: float,
    final: bool = False,
    pause_s: float | None = None,
) -> Step:
    """One step: commit what the last two hypotheses agree on, what a pause has settled,
    and what is too old to wait.

    ``now`` is the audio clock at the end of the decoded audio; ``final`` (the speaker
    paused, the buffer is decoded for the last time) commits every word. With ``pause_s``,
    the words up to one the speaker paused after are committed on this hypothesis alone:
    what a decoder may still change is the word being said at the buffer's end, not one
    followed by a breath — and waiting one more step for it is a step more of lag at
    every sentence end."""
    fresh = fresh_words(hypothesis, state.committed, state.last_end)
    n = 0
    while (
        n < len(fresh) and n < len(state.tail) and norm(fresh[n].text) == norm(state.tail[n].text)
    ):
        n += 1
    agreed, rest = fresh[:n], fresh[n:]
    settled: tuple[TimedWord, ...] = ()
    if final:
        forced, rest = rest, ()
    else:
        if pause_s is not None:
            k = max(
                (i + 1 for i in range(len(rest)) if paused_after(rest, i, now, pause_s)),
                default=0,
            )
            settled, rest = rest[:k], rest[k:]
        # Only a run from the front: a later word is never said before an earlier one.
        k = 0
        while k < len(rest) and now - rest[k].start > force_after_s:
            k += 1
        forced, rest = rest[:k], rest[k:]
    new = agreed + settled + forced
    last_end = max([state.last_end, *(w.end for w in new)])
    return Step(
        state=Agreement(committed=state.committed + new, tail=rest, last_end=last_end),
        agreed=agreed,
        settled=settled,
        forced=forced,
        tail=rest,
    )


@dataclass(frozen=True)
class CutRule:
    pause_s: float = 0.25  # a gap between two words this long is a boundary (a breath)
    min_unit_s: float = 1.0  # a pause closes a unit only once it is this long
    clause_after_s: float = 5.0  # a sentence running longer is cut at a clause end
    max_buffer_s: float = 10.0  # with no boundary at all, cut at the last committed word
    min_cut_s: float = MIN_CUT_S


def cut_point(
    committed: tuple[TimedWord, ...],
    tail: tuple[TimedWord, ...],
    buffer_start: float,
    buffer_end: float,
    rule: CutRule,
) -> float | None:
    """Where the audio buffer may be cut, closing a unit that is then translated, or None.

    At the last committed boundary: a sentence end, or a pause (the next word, committed or
    not, begins ``pause_s`` later, or twice that passes with nothing heard) after a word
    that is not a clause's end, once the unit is ``min_unit_s`` long — Whisper often leaves
    a sentence unpunctuated until the next one has begun, but its word times show the
    breath. A translation needs the whole sentence
    (a verb-final language says what happened last), so within one: only a sentence
    running past ``clause_after_s`` is cut, at its last committed clause end, and a buffer
    past ``max_buffer_s`` with no boundary at its last committed word, so that a long run
    still reaches the listener. Never past a committed word's end (uncommitted speech is
    never dropped), never within ``min_cut_s`` of the buffer's start."""
    words = [w for w in committed if w.end >= buffer_start + rule.min_cut_s]
    if not words:
        return None
    after = [*committed, *tail]
    boundaries = []
    for i, w in enumerate(committed):
        if w.end < buffer_start + rule.min_cut_s:
            continue
        # Nothing heard after it yet: silence, or a word still being said (so twice the gap).
        gap = after[i + 1].start - w.end if i + 1 < len(after) else (buffer_end - w.end) / 2
        # A pause after a clause mark is a breath inside the sentence: Whisper's own
        # punctuation says it goes on (that is a clause boundary, below).
        clause = w.text.rstrip().endswith(CLAUSE_END)
        paused = gap >= rule.pause_s and w.end - buffer_start >= rule.min_unit_s and not clause
        if w.text.rstrip().endswith(SENTENCE_END) or paused:
            boundaries.append(w.end)
    if boundaries:
        return boundaries[-1]
    if words[-1].end - buffer_start > rule.clause_after_s:
        clauses = [w.end for w in words if w.text.rstrip().endswith(CLAUSE_END)]
        if clauses:
            return clauses[-1]
    if buffer_end - buffer_start > rule.max_buffer_s:
        return words[-1].end
    return None


def after_cut(state: Agreement, at: float) -> Agreement:
    """The state once the audio before ``at`` is gone: committed words that ended by then
    leave the buffer (and are no longer expected at the front of a hypothesis)."""
    kept = tuple(w for w in state.committed if w.end > at + 1e-6)
    return Agreement(committed=kept, tail=state.tail, last_end=state.last_end)


def text_of(words: tuple[TimedWord, ...] | list[TimedWord]) -> str:
    return "".join(w.text for w in words).strip()
