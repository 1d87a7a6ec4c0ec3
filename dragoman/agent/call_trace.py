"""The agent's part of a call's trace: one ``agent.call`` span for the call's life, under
the worker's ``worker.start_call`` (the offer's traceparent), with ``agent.accept``,
``agent.media_up`` (Janus said the caller's WebRTC is up), ``agent.first_packet`` (the
caller's first RTP packet) and an ``utterance`` span per utterance.

An utterance's spans are built from its latency marks when its ``metrics`` page message goes
out (its first translated audio has played): the marks are already taken on the pipeline's
path, so tracing adds nothing there. Each step runs from one mark to the next; its name
says what happened in between (``STEPS``). Tracing off: the tracer is a no-op and nothing
here records anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from dragoman import tracing
from dragoman.contract.calls import CallRequest

# The step that ends at a mark (the marks: providers.local.whisper_stt, simultaneous.stt_service,
# providers.cascade_simultaneous, piper_tts). A mark not named here names its own step.
STEPS = {
    "finalise": "vad",  # the VAD's end of speech → the turn is over, decoding starts
    "identified": "language_id",  # conversation mode: which of the pair was spoken
    "translated": "stt_translate",  # recognition and translation (one Whisper decode)
    "speak": "queue",
    "tts_start": "queue",  # waiting for the voice
    "tts_first_chunk": "tts",  # the voice's first audio
    "first_audio_out": "first_audio",  # that audio leaves for the caller
    # Simultaneous: the first piece of a spoken unit is recognised and translated; more
    # pieces may join it before it is said.
    "first_pending": "stt_translate",
}
PAIR_STEPS = {("first_pending", "translated"): "join"}  # where a mark's step depends on before


def utterance_steps(marks: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """(step, start, end) between consecutive marks in time order (monotonic seconds)."""
    timed = sorted((v, k) for k, v in marks.items() if isinstance(v, int | float))
    return [
        (PAIR_STEPS.get((before, name)) or STEPS.get(name, name), start, end)
        for (start, before), (end, name) in zip(timed, timed[1:], strict=False)
    ]


def speech_to_audio_ms(marks: Mapping[str, Any]) -> float | None:
    """End of speech → first translated audio (as the call-end log line counts it)."""
    audio = marks.get("first_audio_out")
    end = marks.get("vad_stop", marks.get("source_end"))
    if not isinstance(audio, int | float) or not isinstance(end, int | float):
        return None
    return round(max(0.0, audio - end) * 1000, 1)


class CallTrace:
    def __init__(self, call: CallRequest, tracer: trace.Tracer, started_at: float) -> None:
        """``started_at``: when the offer arrived (``time.monotonic()``)."""
        self._tracer = tracer
        self._offset_ns = tracing.monotonic_offset_ns()
        self._attributes = tracing.call_attributes(call)
        self.started_at = started_at
        self.span = tracer.start_span(
            "agent.call",
            context=tracing.parent(call.traceparent),
            start_time=self._ns(started_at),
            attributes=self._attributes,
        )
        self._context = trace.set_span_in_context(self.span)

    def _ns(self, monotonic_s: float) -> int:
        return self._offset_ns + int(monotonic_s * 1e9)

    def step(self, name: str, start: float, end: float) -> None:
        """A step of the call (monotonic seconds), under ``agent.call``."""
        if self.span.is_recording():
            tracing.record(
                self._tracer,
                name,
                self._ns(start),
                self._ns(end),
                self._context,
                self._attributes,
            )

    def on_page_message(self, msg: Mapping[str, Any]) -> None:
        """Every page message passes here; an utterance's ``metrics`` become its spans."""
        if msg.get("type") == "metrics" and self.span.is_recording():
            self.utterance(str(msg.get("id", "")), msg.get("marks") or {})

    def utterance(self, utterance_id: str, marks: Mapping[str, Any]) -> None:
        times = [v for v in marks.values() if isinstance(v, int | float)]
        if not times:
            return
        attributes: dict[str, Any] = {**self._attributes, "dragoman.utterance": utterance_id}
        latency = speech_to_audio_ms(marks)
        if latency is not None:
            attributes["dragoman.speech_to_audio_ms"] = latency
        span = self._tracer.start_span(
            "utterance",
            context=self._context,
            start_time=self._ns(min(times)),
            attributes=attributes,
        )
        inside = trace.set_span_in_context(span)
        for name, start, end in utterance_steps(marks):
            tracing.record(self._tracer, name, self._ns(start), self._ns(end), inside)
        span.end(end_time=self._ns(max(times)))

    def end(self, reason: str, media_up_at: float | None, first_packet_at: float | None) -> None:
        """The call is over: its connect steps (where they happened) and its span."""
        if media_up_at is not None:
            self.step("agent.media_up", self.started_at, media_up_at)
        if first_packet_at is not None:
            self.step("agent.first_packet", self.started_at, first_packet_at)
        self.span.set_attribute("dragoman.end_reason", reason)
        self.span.end(end_time=self._ns(time.monotonic()))
