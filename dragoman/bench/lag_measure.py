"""Pure functions behind ``dragoman bench lag``: from what a caller recorded (control
messages and received audio, on its ``time.monotonic()`` clock) and the talk it played, to
per-sentence lags.

Two clocks meet here. The client knows when each sentence began and ended (it played them)
and when each caption and audio frame arrived. The agent stamps a caption with the source
audio it covers (``t_start_ms``/``t_end_ms``, ms since its call started on its own clock).
``clock_origin`` finds the agent's zero on the client's clock; then a translation caption's
span is compared with the sentences' spans (overlap) to know which sentences it translates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

FRAME_S = 0.02  # a received audio frame (its time is when it ended)
MIN_OVERLAP_S = 0.4  # a caption covers a sentence it overlaps by this much (or half itself)
MERGE_GAP_S = 0.35  # audible runs closer than this are one stretch of speech (word gaps)


@dataclass(frozen=True)
class Span:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Segment:
    """One translation caption line (all messages with its ``id``), as it ended up."""

    id: str
    text: str  # the last text (a final one when it came)
    final: bool
    t_start_ms: int
    t_end_ms: int
    first_at: float  # client time of its first non-empty message
    last_at: float  # client time of its last message


def fold_captions(
    messages: list[dict[str, Any]], message_at: list[float], side: str = "translation"
) -> list[Segment]:
    """The caption lines of ``side``, in order of first appearance. Partials of a line are
    replaced by later ones; a line whose last message is empty (withdrawn) is dropped; a
    room peer's lines are not this caller's."""
    lines: dict[str, dict[str, Any]] = {}
    for m, at in zip(messages, message_at, strict=True):
        if m.get("type") != "caption" or m.get("side") != side or m.get("from", "self") != "self":
            continue
        line = lines.setdefault(str(m.get("id")), {"first_at": None})
        text = str(m.get("text") or "")
        if text and line["first_at"] is None:
            line["first_at"] = at
        line.update(
            text=text,
            final=bool(m.get("final")),
            t_start_ms=int(m.get("t_start_ms") or 0),
            t_end_ms=int(m.get("t_end_ms") or 0),
            last_at=at,
        )
    return [
        Segment(id=uid, **line)
        for uid, line in lines.items()
        if line["text"] and line["first_at"] is not None
    ]


@dataclass(frozen=True)
class CaptionEvent:
    """One non-empty translation caption message: a partial's span grows as it goes."""

    id: str
    at: float  # client time it arrived
    t_start_ms: int
    t_end_ms: int


def caption_events(
    messages: list[dict[str, Any]], message_at: list[float], side: str = "translation"
) -> list[CaptionEvent]:
    return [
        CaptionEvent(str(m.get("id")), at, int(m.get("t_start_ms") or 0), int(m["t_end_ms"]))
        for m, at in zip(messages, message_at, strict=True)
        if m.get("type") == "caption"
        and m.get("side") == side
        and m.get("from", "self") == "self"
        and m.get("text")
        and m.get("t_end_ms")
    ]


def first_covering(
    events: list[CaptionEvent], origin: float, sentence: Span
) -> CaptionEvent | None:
    """The first caption message whose span (as it stood then) covers ``sentence``: when
    the listener was first shown words of it. A simultaneous line's first partial covers
    only its first clause; a later partial, grown into the sentence, is the one."""
    return next(
        (
            e
            for e in sorted(events, key=lambda e: e.at)
            if covers(Span(origin + e.t_start_ms / 1000, origin + e.t_end_ms / 1000), sentence)
        ),
        None,
    )


def open_lines(messages: list[dict[str, Any]]) -> int:
    """Caption lines (either side) whose last message is a non-empty partial: the agent is
    still working on them."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for m in messages:
        if m.get("type") == "caption":
            last[(str(m.get("side")), str(m.get("id")))] = m
    return sum(1 for m in last.values() if not m.get("final") and m.get("text"))


# --- the two clocks ------------------------------------------------------------------------
def origin_from_marks(messages: list[dict[str, Any]]) -> float | None:
    """The agent's call start on the client's clock, from a ``metrics`` message's
    ``vad_stop`` mark (the agent host's ``time.monotonic()``) and the ``t_end_ms`` of a
    caption of the same utterance: the agent takes both at the same instant, so their
    difference is its zero. Exact where client and agent share a host (the embedded
    server); None where no such pair came."""
    ends: dict[str, int] = {}
    for m in messages:
        if m.get("type") == "caption" and m.get("t_end_ms"):
            ends[str(m.get("id"))] = int(m["t_end_ms"])
    origins = [
        float(m["marks"]["vad_stop"]) - ends[str(m.get("id"))] / 1000
        for m in messages
        if m.get("type") == "metrics"
        and str(m.get("id")) in ends
        and isinstance(m.get("marks"), dict)
        and m["marks"].get("vad_stop")
    ]
    return median(origins) if origins else None


def origin_from_onset(messages: list[dict[str, Any]], first_onset_at: float) -> float | None:
    """The agent's call start on the client's clock, taking the first source caption's
    ``t_start_ms`` as the first sentence's onset. Approximate: a VAD-cut utterance starts
    with a pre-roll (up to 0.5 s before the onset, minus the VAD's own delay)."""
    for m in messages:
        if m.get("type") == "caption" and m.get("side") == "source" and m.get("text"):
            return first_onset_at - int(m.get("t_start_ms") or 0) / 1000
    return None


def clock_origin(
    messages: list[dict[str, Any]], first_onset_at: float
) -> tuple[float | None, str, float | None]:
    """(origin, the method used, onset estimate minus marks estimate when both exist)."""
    marks = origin_from_marks(messages)
    onset = origin_from_onset(messages, first_onset_at)
    check = None if marks is None or onset is None else round(onset - marks, 3)
    if marks is not None:
        return marks, "agent metrics: vad_stop − t_end_ms (same host clock)", check
    if onset is not None:
        return onset, "first source caption's t_start_ms = first sentence's onset", check
    return None, "none: no source caption came", check


# --- matching ------------------------------------------------------------------------------
def overlap(a: Span, b: Span) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def covers(segment: Span, sentence: Span, min_overlap_s: float = MIN_OVERLAP_S) -> bool:
    """A caption covers a sentence when they share ``min_overlap_s`` of audio, or half the
    caption when it is shorter: its timestamps have some slack (a VAD pre-roll, the
    silence that ended it) that must not pull in the neighbouring sentence across a short
    pause, while a clause-sized caption inside one sentence still counts."""
    shared = overlap(segment, sentence)
    return shared > 0 and shared >= min(min_overlap_s, 0.5 * segment.duration)


def match(sentences: list[Span], segments: list[Span]) -> list[list[int]]:
    """For each sentence, the indices of the segments that cover it (both lists on one
    clock)."""
    return [[j for j, seg in enumerate(segments) if covers(seg, s)] for s in sentences]


def near(sentences: list[Span], segments: list[Span], slack_s: float = 1.0) -> list[list[int]]:
    """For each sentence, the segments within ``slack_s`` of it: where its words may have
    landed when a caption's timestamps are loose (for the key-word check, not timing)."""
    return [
        [
            j
            for j, seg in enumerate(segments)
            if overlap(seg, Span(s.start - slack_s, s.end + slack_s)) > 0
        ]
        for s in sentences
    ]


def covered_by_final(
    messages: list[dict[str, Any]], message_at: list[float], origin: float, sentence: Span
) -> bool:
    """Whether a final translation caption covers ``sentence`` (client clock; the agent's
    zero at ``origin``): the interpreter has got to it."""
    return any(
        seg.final
        and covers(Span(origin + seg.t_start_ms / 1000, origin + seg.t_end_ms / 1000), sentence)
        for seg in fold_captions(messages, message_at)
    )


# --- received audio ----------------------------------------------------------------------
def first_audible(
    at: list[float], rms: list[float], after: float, threshold: float
) -> float | None:
    """Client time of the first audible received frame arriving at or after ``after``."""
    return next((t for t, r in zip(at, rms, strict=True) if t >= after and r > threshold), None)


def audible_spans(
    at: list[float],
    rms: list[float],
    threshold: float,
    since: float = float("-inf"),
    merge_gap_s: float = MERGE_GAP_S,
) -> list[Span]:
    """Stretches of audible received audio from ``since`` on (a frame spans the 20 ms
    before its arrival), gaps shorter than ``merge_gap_s`` bridged."""
    spans: list[Span] = []
    for t, r in zip(at, rms, strict=True):
        if t < since or r <= threshold:
            continue
        if spans and t - FRAME_S - spans[-1].end <= merge_gap_s:
            spans[-1] = Span(spans[-1].start, t)
        else:
            spans.append(Span(t - FRAME_S, t))
    return spans


def audible_before(at: list[float], rms: list[float], when: float, threshold: float) -> bool:
    """Audio was already audible just before ``when`` (within two frames): a translation
    that starts then may be heard only once that earlier speech is over."""
    return any(
        when - 2 * FRAME_S <= t < when and r > threshold for t, r in zip(at, rms, strict=True)
    )


# --- statistics and meaning ---------------------------------------------------------------
def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs`` (None below two distinct ``xs``)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    k, _ = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(k)


def summary_s(values: list[float]) -> dict[str, float | int | None]:
    """count, p50, max and mean of seconds (2 decimals)."""
    if not values:
        return {"count": 0, "p50": None, "max": None, "mean": None}
    xs = np.asarray(values, float)
    return {
        "count": int(xs.size),
        "p50": round(float(np.percentile(xs, 50)), 2),
        "max": round(float(xs.max()), 2),
        "mean": round(float(xs.mean()), 2),
    }


def keys_found(text: str, keys: list[tuple[str, ...]]) -> list[bool]:
    """Whether each key word (any of its spellings, any case) is in ``text`` as a whole
    word, a plural or an ordinal ("apples", "10th" for "apple", "10")."""
    low = text.lower()
    return [
        any(
            re.search(rf"(?<![\w.]){re.escape(k.lower())}(?:s|st|nd|rd|th)?(?!\w)", low)
            for k in spellings
        )
        for spellings in keys
    ]
