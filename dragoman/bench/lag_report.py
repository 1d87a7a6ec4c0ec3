"""``dragoman bench lag``'s numbers: one mode's recording turned into per-sentence lags and
totals (pure), and the table that puts them next to the targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dragoman.bench.caller import AUDIBLE_RMS
from dragoman.bench.lag_measure import (
    Segment,
    Span,
    audible_before,
    audible_spans,
    caption_events,
    clock_origin,
    first_audible,
    first_covering,
    fold_captions,
    keys_found,
    match,
    near,
    slope,
    summary_s,
)
from dragoman.bench.lag_talk import Talk

# Where consecutive interpretation stood when simultaneous mode was started (the issue's
# table), and what simultaneous mode must reach (DESIGN.md).
TODAY = {
    "first_audio_s": "16.6 s",
    "lag_s": "p50 6.2 s, max 12.6 s",
    "end_caption_s": "2.1 s",
    "end_audio_s": "—",
    "trend": "—",
    "meaning": "6 of 8",
    "cpu": "—",
}
TARGET = {
    "first_audio_s": 4.0,
    "lag_p50_s": 2.5,
    "lag_max_s": 4.0,
    "end_caption_s": 3.0,
    # "No growth": a least-squares slope this small is within the noise of ~15 lags a
    # minute; 0.02 s/s is 1.2 s more lag after a minute of talk.
    "slope_s_per_s": 0.02,
}


@dataclass
class Recording:
    """What one call of the run recorded (client ``time.monotonic()`` seconds)."""

    mode: str
    talk_at: float = 0.0  # the talk's first sample went out
    messages: list[dict[str, Any]] = field(default_factory=list)
    message_at: list[float] = field(default_factory=list)
    audio_at: list[float] = field(default_factory=list)
    audio_rms: list[float] = field(default_factory=list)
    in_force: str | None = None  # the interpretation the agent's ``languages`` reported
    cpu_s: float | None = None  # inference service CPU during the talk and its drain
    error: str | None = None


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def analyse(rec: Recording, talk: Talk, threshold: float = AUDIBLE_RMS) -> dict[str, Any]:
    """One mode's report: times are seconds after the talk's first sample unless named
    otherwise; lags are client-measured (sentence end as played → first audible translated
    audio received)."""
    out: dict[str, Any] = {
        "mode": rec.mode,
        "interpretation_in_force": rec.in_force,
    }
    if rec.error:
        return {**out, "error": rec.error}
    t0 = rec.talk_at
    sent = [Span(t0 + s.start_s, t0 + s.end_s) for s in talk.sentences]
    talk_end = sent[-1].end
    origin, method, check = clock_origin(rec.messages, sent[0].start)
    out["clock"] = {"method": method, "onset_minus_marks_s": check}
    if origin is None:
        return {**out, "error": "no source caption came: the talk cannot be placed on the agent"}
    out["clock"]["agent_zero_before_talk_s"] = round(t0 - origin, 3)
    segs = [s for s in fold_captions(rec.messages, rec.message_at) if s.t_end_ms > 0]
    spans = [Span(origin + s.t_start_ms / 1000, origin + s.t_end_ms / 1000) for s in segs]
    heard = [first_audible(rec.audio_at, rec.audio_rms, s.first_at, threshold) for s in segs]
    cover, nearby = match(sent, spans), near(sent, spans)

    events = caption_events(rec.messages, rec.message_at)
    rows = []
    for s, span, js, ks in zip(talk.sentences, sent, cover, nearby, strict=True):
        event = first_covering(events, origin, span)
        caption_at = None if event is None else event.at
        start = (
            None
            if caption_at is None
            else first_audible(rec.audio_at, rec.audio_rms, caption_at, threshold)
        )
        found = keys_found(" ".join(segs[j].text for j in ks), s.keys)
        rows.append(
            {
                "sentence": s.index,
                "text": s.text,
                "start_s": round(s.start_s, 2),
                "end_s": round(s.end_s, 2),
                "segments": [segs[j].id for j in js],
                "caption_s": _r(None if caption_at is None else caption_at - t0),
                "translation_start_s": _r(None if start is None else start - t0),
                "lag_s": _r(None if start is None else start - span.end),
                # The caption came while earlier speech still played: the audio taken as its
                # start may be that earlier speech (an underestimate of this lag).
                "after_busy_audio": caption_at is not None
                and audible_before(rec.audio_at, rec.audio_rms, caption_at, threshold),
                "keys": [list(k) for k in s.keys],
                "keys_found": found,
                "kept": all(found),
            }
        )
    lagged = [r for r in rows if r["lag_s"] is not None]
    k = slope([r["end_s"] for r in lagged], [r["lag_s"] for r in lagged])
    first_caption = min((s.first_at for s in segs), default=None)
    first = (
        None
        if first_caption is None
        else first_audible(rec.audio_at, rec.audio_rms, first_caption, threshold)
    )
    speech = (
        []
        if first_caption is None
        else audible_spans(rec.audio_at, rec.audio_rms, threshold, since=first_caption)
    )
    out.update(
        {
            "sentences": len(rows),
            "translated": len(lagged),
            "first_audio_s": _r(None if first is None else first - t0),
            "lag_s": summary_s([r["lag_s"] for r in lagged]),
            "slope_s_per_s": _r(k, 4),
            "end_caption_s": _r(max((s.last_at for s in segs), default=t0) - talk_end)
            if segs
            else None,
            "end_audio_s": _r(speech[-1].end - talk_end) if speech else None,
            "kept": sum(r["kept"] for r in rows),
            "keys_found": sum(sum(r["keys_found"]) for r in rows),
            "keys": sum(len(r["keys"]) for r in rows),
            "busy_starts": sum(r["after_busy_audio"] for r in rows),
            # Lines still partial when the run stopped waiting: the agent never finished them.
            "unfinished_lines": sum(not s.final for s in segs),
            "cpu_s": _r(rec.cpu_s),
            "cpu_per_speech_s": _r(None if rec.cpu_s is None else rec.cpu_s / talk.duration_s, 3),
            "per_sentence": rows,
            "segments": [
                _segment(s, sp, h, t0) for s, sp, h in zip(segs, spans, heard, strict=True)
            ],
            "speech_spans": [[round(s.start - t0, 2), round(s.end - t0, 2)] for s in speech],
        }
    )
    return out


def _segment(seg: Segment, span: Span, heard: float | None, t0: float) -> dict[str, Any]:
    return {
        "id": seg.id,
        "text": seg.text,
        "final": seg.final,
        "source_s": [round(span.start - t0, 2), round(span.end - t0, 2)],
        "caption_s": round(seg.first_at - t0, 2),
        "speech_s": _r(None if heard is None else heard - t0),
    }


# --- the table -----------------------------------------------------------------------------
def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f} s"


def cells(m: dict[str, Any], talk_s: float) -> dict[str, str]:
    """One mode's measurements as the table's cells."""
    if m.get("error"):
        return dict.fromkeys(TODAY, "error")
    lag = m["lag_s"]
    k = m["slope_s_per_s"]
    return {
        "first_audio_s": _s(m["first_audio_s"]),
        "lag_s": f"p50 {_s(lag['p50'])}, max {_s(lag['max'])} ({m['translated']} of "
        f"{m['sentences']})",
        "end_caption_s": _s(m["end_caption_s"])
        + ("" if m["per_sentence"][-1]["lag_s"] is not None else " (last sentence lost)"),
        "end_audio_s": _s(m["end_audio_s"]),
        "trend": "—" if k is None else f"{k:+.3f} s/s ({k * talk_s:+.1f} s over {talk_s:.0f} s)",
        "meaning": f"{m['kept']} of {m['sentences']} ({m['keys_found']} of {m['keys']} words)",
        "cpu": "—" if m["cpu_per_speech_s"] is None else f"{m['cpu_per_speech_s']:.2f} CPU-s/s",
    }


def verdicts(sim: dict[str, Any], cons: dict[str, Any] | None) -> dict[str, bool | None]:
    """Whether simultaneous mode meets each target (None: not measurable in this run)."""
    if sim.get("error"):
        return dict.fromkeys(TODAY)
    lag = sim["lag_s"]
    all_in = sim["translated"] == sim["sentences"]

    def at_most(x: float | None, bound: float) -> bool | None:
        return None if x is None else x <= bound

    lag_ok = (
        None
        if lag["p50"] is None
        else all_in and lag["p50"] <= TARGET["lag_p50_s"] and lag["max"] <= TARGET["lag_max_s"]
    )
    meaning = None if not cons or cons.get("error") else sim["kept"] >= cons["kept"]
    return {
        "first_audio_s": at_most(sim["first_audio_s"], TARGET["first_audio_s"]),
        "lag_s": lag_ok,
        # An early "last caption" is no pass when the talk's last sentence never came.
        "end_caption_s": at_most(sim["end_caption_s"], TARGET["end_caption_s"])
        and sim["per_sentence"][-1]["lag_s"] is not None,
        "end_audio_s": None,
        "trend": at_most(sim["slope_s_per_s"], TARGET["slope_s_per_s"]),
        "meaning": meaning,
        "cpu": None,
    }


ROWS = {
    "first_audio_s": ("first translated audio after the talk starts", "≤ 4 s"),
    "lag_s": ("per sentence: its end → its translation starts", "p50 ≤ 2.5 s, max ≤ 4 s"),
    "end_caption_s": ("talk ends → last translation caption", "≤ 3 s"),
    "end_audio_s": ("talk ends → last translated audio ends", "—"),
    "trend": ("lag trend over the talk (least squares)", "no growth (≤ 0.02 s/s)"),
    "meaning": ("meaning kept (key words in the captions)", "not worse than consecutive"),
    "cpu": ("inference CPU per second of talk", "—"),
}


def table(modes: dict[str, dict[str, Any]], talk_s: float) -> str:
    """A markdown table: the issue's reference and targets, then each measured mode (a ✓/✗
    after a simultaneous measurement that has a target)."""
    names = list(modes)
    sim = modes.get("simultaneous")
    ok = verdicts(sim, modes.get("consecutive")) if sim else {}
    header = ["what", "consecutive today", "simultaneous target", *(f"{n} (now)" for n in names)]
    lines = [header, ["---"] * len(header)]
    measured = {n: cells(modes[n], talk_s) for n in names}
    for key, (what, target) in ROWS.items():
        row = [what, TODAY[key], target]
        for n in names:
            mark = {True: " ✓", False: " ✗"}.get(ok.get(key)) if n == "simultaneous" else ""
            row.append(measured[n][key] + (mark or ""))
        lines.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in lines)
