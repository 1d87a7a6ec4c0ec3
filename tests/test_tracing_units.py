"""The call's trace without a server: spans recorded in memory (OpenTelemetry's own exporter).

The api's spans come from the real ``Dispatcher`` (reserve, hand-off), the hand-off's context
crosses to a stand-in worker in the ``CallRequest`` and on to the agent through a real pipe
message (``Offer`` as the pipe encodes it), where ``CallTrace`` builds the agent's spans
from its latency marks. ``tests/test_tracing.py`` does it with a real ``serve``.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dragoman import tracing
from dragoman.agent.call_trace import CallTrace, utterance_steps
from dragoman.contract.calls import CallAnswer, CallRequest
from dragoman.contract.pipe import TO_AGENT, Offer, RtpPeer
from dragoman.fleet.dispatcher import Dispatcher
from dragoman.fleet.memory_registry import MemoryRegistry
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.registry import NodeReport

CALL = CallRequest(
    call_id="c1",
    sdp="v=0",
    source="ja",
    target="en",
    provider="local",
    mode="one_way",
    interpretation="consecutive",
)
CALL_ATTRIBUTES = {
    "dragoman.call_id": "c1",
    "dragoman.provider": "local",
    "dragoman.mode": "one_way",
    "dragoman.source": "ja",
    "dragoman.target": "en",
    "dragoman.interpretation": "consecutive",
}


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Every role's spans into one in-memory exporter; tracing off again afterwards."""
    exporter = InMemorySpanExporter()
    for role in ("api", "worker", "agent"):
        tracing.install(role, SimpleSpanProcessor(exporter))
    yield exporter
    tracing.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def only(spans: dict[str, list[ReadableSpan]], name: str) -> ReadableSpan:
    assert len(spans.get(name, [])) == 1, sorted(spans)
    return spans[name][0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


class _Worker:
    """Stands in for the worker: opens its span under the hand-off's traceparent, as
    ``worker.calls.node_calls.NodeCalls.start_call`` does, and hands the call on to the agent."""

    def __init__(self) -> None:
        self.offers: list[bytes] = []

    async def start_call(self, req: CallRequest) -> CallAnswer:
        with tracing.tracer("worker").start_as_current_span(
            "worker.start_call", context=tracing.parent(req.traceparent)
        ) as span:
            call = req.model_copy(update={"traceparent": tracing.traceparent(span)})
            offer = Offer(
                call=call, peer=RtpPeer(address="127.0.0.1", port=30000, payload_type=111)
            )
            self.offers.append(pickle.dumps(offer.model_dump()))  # what the pipe carries
        return CallAnswer(sdp="")

    async def end_call(self, call_id: str, reason: str) -> bool:
        return False


async def test_one_trace_from_the_api_through_the_worker_to_the_agent(
    exported: InMemorySpanExporter,
) -> None:
    registry = MemoryRegistry()
    await registry.register(
        NodeReport(node_id="n1", address="w1", capacity=4, idle=4, state=NodeState.READY)
    )
    worker = _Worker()
    dispatcher = Dispatcher(registry, lambda _address: worker, 10.0, 2)
    with tracing.tracer("api").start_as_current_span("POST /v1/calls") as root:
        root.set_attributes(tracing.call_attributes(CALL))
        await dispatcher.start_call(CALL)

    # The agent's side: the offer off the pipe, one utterance's marks, the call's end.
    offer = TO_AGENT.validate_python(pickle.loads(worker.offers[0]))
    assert isinstance(offer, Offer)
    t = time.monotonic()
    call_trace = CallTrace(offer.call, tracing.tracer("agent"), t)
    call_trace.step("agent.accept", t, t + 0.002)
    marks = {
        "vad_stop": t + 1.0,
        "finalise": t + 1.1,
        "translated": t + 1.4,
        "tts_start": t + 1.45,
        "tts_first_chunk": t + 1.6,
        "first_audio_out": t + 1.65,
    }
    call_trace.on_page_message({"type": "caption", "id": "u1"})  # not a span
    call_trace.on_page_message({"type": "metrics", "id": "u1", "marks": marks})
    call_trace.end("hangup", media_up_at=t + 0.05, first_packet_at=t + 0.06)

    spans = exported.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace, every process
    named = by_name(spans)
    post, reserve, hand_off = (
        only(named, n) for n in ("POST /v1/calls", "registry.reserve", "worker.hand_off")
    )
    worker_span, agent_call = only(named, "worker.start_call"), only(named, "agent.call")
    assert post.parent is None
    assert parent_of(reserve) == parent_of(hand_off) == post.context.span_id
    assert parent_of(worker_span) == hand_off.context.span_id  # across the hand-off
    assert parent_of(agent_call) == worker_span.context.span_id  # across the pipe
    assert hand_off.kind is trace.SpanKind.CLIENT
    assert hand_off.attributes["dragoman.node"] == "n1"
    assert reserve.attributes["dragoman.call_id"] == "c1"
    assert dict(post.resource.attributes)["service.name"] == "dragoman-api"
    assert dict(worker_span.resource.attributes)["service.name"] == "dragoman-worker"
    assert dict(agent_call.resource.attributes)["service.name"] == "dragoman-agent"
    assert {k: agent_call.attributes[k] for k in CALL_ATTRIBUTES} == CALL_ATTRIBUTES
    assert agent_call.attributes["dragoman.end_reason"] == "hangup"
    for name in ("agent.accept", "agent.media_up", "agent.first_packet"):
        assert parent_of(only(named, name)) == agent_call.context.span_id, name
    media_up = only(named, "agent.media_up")
    assert media_up.end_time - media_up.start_time == pytest.approx(50e6, abs=2e6)

    utterance = only(named, "utterance")
    assert parent_of(utterance) == agent_call.context.span_id
    assert utterance.attributes["dragoman.utterance"] == "u1"
    assert utterance.attributes["dragoman.provider"] == "local"
    assert utterance.attributes["dragoman.speech_to_audio_ms"] == pytest.approx(650, abs=0.2)
    assert utterance.end_time - utterance.start_time == pytest.approx(650e6, abs=2e6)
    steps = [s for s in spans if parent_of(s) == utterance.context.span_id]
    steps.sort(key=lambda s: s.start_time)
    assert [s.name for s in steps] == ["vad", "stt_translate", "queue", "tts", "first_audio"]
    durations_ms = [(s.end_time - s.start_time) / 1e6 for s in steps]
    assert durations_ms == pytest.approx([100, 300, 50, 150, 50], abs=2)
    # Back to back: each step starts where the one before ended.
    assert all(a.end_time == b.start_time for a, b in zip(steps, steps[1:], strict=False))


def test_utterance_steps_follow_the_marks_in_time_order() -> None:
    # Simultaneous interpretation's marks: the first piece's source audio ended, its
    # translation came (pending), more joined it, then it was said; a mark of no known step
    # names its own.
    marks = {
        "translated": 5.0,
        "first_pending": 4.0,
        "source_end": 3.0,
        "first_audio_out": 7.0,
        "later_mark": 6.0,
    }
    assert utterance_steps(marks) == [
        ("stt_translate", 3.0, 4.0),
        ("join", 4.0, 5.0),
        ("later_mark", 5.0, 6.0),
        ("first_audio", 6.0, 7.0),
    ]
    assert utterance_steps({"vad_stop": 1.0, "text": "x"}) == []  # one mark: no step


def test_tracing_off_records_nothing_and_passes_no_context() -> None:
    assert not tracing.enabled({"OTEL_SERVICE_NAME": "x"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    tracing.setup("api")  # no endpoint in this environment: stays off
    with tracing.tracer("api").start_as_current_span("POST /v1/calls") as span:
        assert not span.is_recording()
        assert tracing.traceparent(span) is None
    call_trace = CallTrace(CALL, tracing.tracer("agent"), time.monotonic())
    call_trace.on_page_message({"type": "metrics", "id": "u1", "marks": {"vad_stop": 1.0}})
    call_trace.end("hangup", None, None)
    assert not call_trace.span.is_recording()
    assert tracing.parent(None) is None


def test_a_traceparent_names_its_span() -> None:
    exporter = InMemorySpanExporter()
    tracing.install("api", SimpleSpanProcessor(exporter))
    try:
        with tracing.tracer("api").start_as_current_span("x") as span:
            tp = tracing.traceparent(span)
        ctx = span.get_span_context()
        assert tp is not None and tp.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
        child = tracing.tracer("api").start_span("y", context=tracing.parent(tp))
        child.end()
        assert child.parent is not None and child.parent.span_id == ctx.span_id
    finally:
        tracing.shutdown()
