"""OpenTelemetry traces of a call, across the processes that place and run it.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set. Then each role a process plays (``api``, ``worker``, ``agent``) gets its own
TracerProvider, service name ``dragoman-<role>``, exporting OTLP/HTTP protobuf in batches;
the SDK reads the other ``OTEL_*`` variables itself (headers, ``OTEL_BSP_SCHEDULE_DELAY``,
...). Off, every tracer is OpenTelemetry's no-op one: a span records and sends nothing, and
the SDK is not even imported.

``serve`` runs the api and the worker in one process: two providers, so its traces show the
same services as a fleet's. Context crosses processes as a W3C ``traceparent``: in the
hand-off's ``CallRequest`` (api → worker, over HTTP or in-process), which the worker passes
on in the agent's offer (worker → agent, over the pipe).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# What an exporting process imports (the worker's forkserver preloads it for its agents).
SDK_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
FLUSH_TIMEOUT_MS = 2000  # an agent exits after its call: what it recorded goes out first

_providers: dict[str, Any] = {}  # role → its SDK TracerProvider (only when on)
_NOOP = trace.NoOpTracer()
_PROPAGATOR = TraceContextTextMapPropagator()


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return any(env.get(name) for name in ENDPOINT_VARIABLES)


def setup(*roles: str) -> None:
    """Give each role an OTLP-exporting provider, if an endpoint is configured."""
    if not enabled():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    for role in roles:
        if role not in _providers:
            install(role, BatchSpanProcessor(OTLPSpanExporter()))


def install(role: str, processor: Any) -> None:
    """A provider for ``role`` whose spans go to ``processor`` (tests: an in-memory one)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": f"dragoman-{role}"}))
    provider.add_span_processor(processor)
    _providers[role] = provider


def tracer(role: str) -> trace.Tracer:
    provider = _providers.get(role)
    return provider.get_tracer("dragoman") if provider is not None else _NOOP


def shutdown() -> None:
    """Send what is recorded and stop (an agent process, which skips atexit handlers)."""
    while _providers:
        _, provider = _providers.popitem()
        provider.force_flush(FLUSH_TIMEOUT_MS)
        provider.shutdown()


def traceparent(span: trace.Span) -> str | None:
    """``span``'s W3C traceparent, for the next process; None for a no-op span."""
    if not span.get_span_context().is_valid:
        return None  # tracing off: skip the propagator (a few microseconds)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def parent(traceparent: str | None) -> Context | None:
    """The context a traceparent names (None: the span starts a trace of its own)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def monotonic_offset_ns() -> int:
    """Add to ``time.monotonic()`` nanoseconds to get epoch nanoseconds (span times): taken
    once per call, so spans built later from its marks meet exactly where the marks do."""
    return time.time_ns() - time.monotonic_ns()


def perf_ns(perf_s: float) -> int:
    """A ``time.perf_counter()`` reading as epoch nanoseconds."""
    return time.time_ns() - int((time.perf_counter() - perf_s) * 1e9)


def record(
    tracer: trace.Tracer,
    name: str,
    start_ns: int,
    end_ns: int,
    context: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A span for a step that already happened (its times known, e.g. latency marks)."""
    span = tracer.start_span(name, context=context, start_time=start_ns, attributes=attributes)
    span.end(end_time=max(start_ns, end_ns))


class CallLike(Protocol):
    call_id: str
    provider: str
    mode: str
    source: str
    target: str
    interpretation: str


def call_attributes(call: CallLike) -> dict[str, str]:
    """What every span about a call carries, to find it by its id, provider, languages."""
    return {
        "dragoman.call_id": call.call_id,
        "dragoman.provider": call.provider,
        "dragoman.mode": call.mode,
        "dragoman.source": call.source,
        "dragoman.target": call.target,
        "dragoman.interpretation": call.interpretation,
    }
