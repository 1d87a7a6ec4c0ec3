"""One structured log line per call end: who, what, how long, why it ended, how fast.

The worker sees every call from hand-off to its process's exit: the request (provider,
mode, languages), when its agent answered, when the caller's WebRTC came up, and each
utterance's latency marks (the agents' ``metrics`` page messages, on the node's monotonic
clock). ``CallRecord`` keeps what arrives while the call runs; ``end_fields`` (pure) turns
it into the line's fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from dragoman.contract.calls import CallRequest

log = logging.getLogger("dragoman.calls")


@dataclass
class CallRecord:
    """What the worker learned about one call while it ran (times: ``time.monotonic()``)."""

    answer_ms: float | None = None  # hand-off received → answer ready (the worker's part)
    first_audio_at: float | None = None  # the agent first played translated speech
    # Each utterance's end of speech → its first translated audio, s (0 when the
    # interpretation began speaking before the person stopped).
    speech_to_audio_s: list[float] = field(default_factory=list)

    def on_marks(self, marks: Any) -> None:
        """An utterance's latency marks (its ``metrics`` page message)."""
        if not isinstance(marks, dict):
            return
        audio = marks.get("first_audio_out")
        if not isinstance(audio, int | float):
            return
        if self.first_audio_at is None or audio < self.first_audio_at:
            self.first_audio_at = float(audio)
        end = marks.get("vad_stop", marks.get("source_end"))
        if isinstance(end, int | float):
            self.speech_to_audio_s.append(max(0.0, audio - end))


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier) * 1000, 1)


def end_fields(
    call_id: str,
    node: str,
    req: CallRequest | None,
    reason: str,
    record: CallRecord,
    started_at: float | None,
    media_up_at: float | None,
    now: float,
) -> dict[str, Any]:
    """The call-end line's fields; None where a step never happened (no media, no speech).
    ``started_at``: when the agent took the call; ``req`` is None for a call that ended
    before its agent accepted it."""
    latencies = record.speech_to_audio_s
    return {
        "call_id": call_id,
        "node": node,
        "provider": req.provider if req else None,
        "mode": req.mode if req else None,
        "interpretation": req.interpretation if req else None,
        "source": req.source if req else None,
        "target": req.target if req else None,
        "reason": reason,
        "duration_s": round(now - started_at, 1) if started_at is not None else None,
        "answer_ms": record.answer_ms,
        "connect_ms": _ms(media_up_at, started_at),
        "first_audio_ms": _ms(record.first_audio_at, started_at),
        "utterances": len(latencies),
        "speech_to_audio_p50_ms": round(median(latencies) * 1000) if latencies else None,
        "speech_to_audio_max_ms": round(max(latencies) * 1000) if latencies else None,
    }


def log_call_end(fields: dict[str, Any]) -> None:
    """INFO ``call ended key=value ...``; with DRAGOMAN_LOG_FORMAT=json each field is a key."""
    # The text line's prefix names the call already (logs.CallIdFilter, from extra).
    text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k != "call_id")
    log.info("call ended %s", text, extra=fields)
