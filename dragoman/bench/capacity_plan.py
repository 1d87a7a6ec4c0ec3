"""Pure pieces of ``dragoman bench capacity``: each caller's talk schedule, a step's figures
from its per-sentence lags and the inference service's queue counters, and the capacity
decision from the steps' figures. No I/O here; ``capacity`` does the calling and timing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from dragoman.bench.caller import RATE
from dragoman.bench.lag_talk import EDGE_S, Sentence, Talk, voiced_bounds

# What a step must meet for its N to count (DESIGN.md's targets for one talker, held at N).
TARGETS: dict[str, dict[str, float]] = {
    "consecutive": {"p95_s": 2.5},
    "simultaneous": {"p50_s": 2.5, "max_s": 4.0},
}
WITHIN_S = 8.0  # a sentence whose translation has not started this long after it is lost


# --- the talk ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    clip: int  # index in the sentence pool
    start_s: float  # where the (trimmed) clip starts in the caller's talk


def schedule(
    durations: list[float],
    talk_s: float,
    seed: int,
    pause_s: tuple[float, float] = (1.0, 2.0),
    lead_s: tuple[float, float] = (0.0, 2.0),
) -> list[Turn]:
    """Sentences drawn at random from the pool (never the same twice in a row), a random
    lead before the first (so N callers do not speak in step) and a random pause between
    them, until the next would end after ``talk_s``; always at least one. Same seed, same
    talk."""
    rng = random.Random(seed)
    at = rng.uniform(*lead_s)
    turns: list[Turn] = []
    last = -1
    while True:
        choices = [i for i in range(len(durations)) if i != last] or [0]
        clip = rng.choice(choices)
        if turns and at + durations[clip] > talk_s:
            return turns
        turns.append(Turn(clip, round(at, 3)))
        at += durations[clip] + rng.uniform(*pause_s)
        last = clip


def speech_share(durations: list[float], turns: list[Turn]) -> float:
    """Share of the talk (first onset → last end) spent speaking."""
    if not turns:
        return 0.0
    spoken = sum(durations[t.clip] for t in turns)
    span = turns[-1].start_s + durations[turns[-1].clip] - turns[0].start_s
    return spoken / span if span > 0 else 0.0


def trim(clip: np.ndarray) -> np.ndarray:
    """A clip cut to its voiced part ± ``EDGE_S`` (Kokoro pads its own silence)."""
    a, b = voiced_bounds(clip, RATE)
    edge = int(EDGE_S * RATE)
    return clip[max(0, a - edge) : min(len(clip), b + edge)]


def build_talk(
    clips: list[np.ndarray],
    texts: list[str],
    keys: list[list[tuple[str, ...]]],
    turns: list[Turn],
    pause_s: float,
) -> Talk:
    """One caller's microphone audio: the trimmed ``clips`` placed at their turns' starts,
    silence between; each sentence's span is its voiced part there."""
    ends = [int(round(t.start_s * RATE)) + len(clips[t.clip]) for t in turns]
    pcm = np.zeros(max(ends, default=0), np.int16)
    sentences = []
    for i, turn in enumerate(turns):
        clip = clips[turn.clip]
        at = int(round(turn.start_s * RATE))
        pcm[at : at + len(clip)] = clip
        va, vb = voiced_bounds(clip, RATE)
        sentences.append(
            Sentence(i, texts[turn.clip], keys[turn.clip], (at + va) / RATE, (at + vb) / RATE)
        )
    return Talk(pcm, sentences, pause_s)


# --- a step's figures ------------------------------------------------------------------------
def nearest_rank(values: list[float], q: float) -> float | None:
    """The q-th percentile by nearest rank (an actual value; ``inf`` stays ``inf``)."""
    if not values:
        return None
    xs = sorted(values)
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, 2)


def lag_figures(lags: list[float | None], within_s: float = WITHIN_S) -> dict[str, Any]:
    """A step's sentences → p50/p95/max of end of sentence → translated audio. A sentence
    not translated within ``within_s`` counts as infinitely late in the percentiles (an
    ``untranslated`` share that reaches a percentile makes it None: past ``within_s``)."""
    late = [math.inf if x is None or x > within_s else x for x in lags]
    return {
        "sentences": len(lags),
        "untranslated": sum(1 for x in late if math.isinf(x)),
        "p50_s": _finite(nearest_rank(late, 50)),
        "p95_s": _finite(nearest_rank(late, 95)),
        "max_s": _finite(max(late, default=None)),
        "mean_translated_s": _finite(
            float(np.mean([x for x in late if not math.isinf(x)]))
            if any(not math.isinf(x) for x in late)
            else None
        ),
    }


def step_ok(mode: str, fig: dict[str, Any]) -> bool:
    """The step meets ``mode``'s target: every bound figure measured and within it (a
    percentile past ``WITHIN_S`` is None, which fails)."""
    if not fig.get("sentences"):
        return False
    return all(fig.get(k) is not None and fig[k] <= bound for k, bound in TARGETS[mode].items())


def capacity(steps: list[dict[str, Any]]) -> int:
    """The largest N such that it and every smaller N measured passed (``ok``): a pass
    above a failure is noise, not capacity. 0 when the first step fails."""
    best = 0
    for s in sorted(steps, key=lambda s: s["calls"]):
        if not s["ok"]:
            break
        best = s["calls"]
    return best


# --- the inference service's queue ----------------------------------------------------------
def queue_wait(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Jobs that started in the step (between two ``lanes.stats()`` snapshots) per priority:
    how many, their mean wait and the bucket bound under which 95 % of them waited (None:
    no jobs, or beyond the last bucket). No ``before``: counted from zero."""
    out: dict[str, Any] = {}
    if not after:
        return out
    before = before or {}
    for prio, a in after.get("wait_ms", {}).items():
        b = before.get("wait_ms", {}).get(prio, {"count": 0, "sum_ms": 0.0, "le_ms": {}})
        n = a["count"] - b["count"]
        p95 = None
        if n > 0:
            for bound, cum in a["le_ms"].items():
                if cum - b["le_ms"].get(bound, 0) >= 0.95 * n:
                    p95 = float(bound)
                    break
        out[prio] = {
            "jobs": n,
            "mean_ms": round((a["sum_ms"] - b["sum_ms"]) / n, 1) if n > 0 else None,
            "p95_le_ms": p95,
        }
    out["superseded"] = after.get("superseded", 0) - before.get("superseded", 0)
    return out
