"""A call's trace from a real ``dragoman serve``: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, its
api, worker and agent export OTLP/HTTP to a receiver run here (a small HTTP server decoding
the protobuf with ``opentelemetry-proto``), and one call with speech comes back as one trace
across the three services, its utterance under the call. And with the api and the worker as
separate processes (a real Redis registry), the context crosses the HTTP hand-off."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server, final_caption, start_server, stop_server, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from redis_server import RedisServer

from dragoman.bench.caller import Caller, load_wav_mono
from dragoman.bench.embedded import NO_ABUSE_LIMITS, free_port, free_serve_port, internal_url


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.take(ExportTraceServiceRequest.FromString(body))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def take(self, req: ExportTraceServiceRequest) -> None:
        got = []
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(
                        Span(
                            service=resource.get("service.name", ""),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.posts += 1
            self.spans.extend(got)

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.http.shutdown()


@pytest.fixture
def traced_server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("traces"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",  # ms: spans arrive while the test waits
        DRAGOMAN_MAX_CALLS="1",
        DRAGOMAN_PROVIDER="local",
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


async def poll(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Waits on the event loop (the caller's media goes on meanwhile)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def test_one_call_is_one_trace_across_api_worker_and_agent(
    traced_server: Server, receiver: Receiver, ja_speech: Path
) -> None:
    caller = Caller(traced_server.url, source="ja", target="en")
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        call_id = result.call_id
        await caller.wait_for(lambda m: m.get("state") == "listening", 15)
        mark = caller.mark()
        caller.mic.play(load_wav_mono(ja_speech))
        await caller.wait_for(final_caption("translation"), 40, since=mark)
        # An utterance's marks go out once its first translated audio has played.
        await caller.wait_for(lambda m: m.get("type") == "metrics", 30, since=mark)
        async with httpx.AsyncClient() as http:
            r = await http.delete(f"{traced_server.url}/v1/calls/{call_id}", timeout=5)
        assert r.status_code == 204

        def agent_call() -> Span | None:
            return next(
                (
                    s
                    for s in receiver.snapshot()
                    if s.name == "agent.call" and s.attributes.get("dragoman.call_id") == call_id
                ),
                None,
            )

        # The agent exports its spans as it exits, right after its call.
        agent = await poll(agent_call, 30, "the agent's call span")
    finally:
        await caller.close()

    trace = [s for s in receiver.snapshot() if s.trace_id == agent.trace_id]
    by_name: dict[str, list[Span]] = {}
    for s in trace:
        by_name.setdefault(s.name, []).append(s)

    def one(name: str) -> Span:
        assert len(by_name.get(name, [])) == 1, (name, sorted(by_name))
        return by_name[name][0]

    assert {s.service for s in trace} == {"dragoman-api", "dragoman-worker", "dragoman-agent"}
    post, hand_off, worker = one("POST /v1/calls"), one("worker.hand_off"), one("worker.start_call")
    assert post.service == "dragoman-api" and post.parent_id == ""  # the trace's root
    assert one("admission").parent_id == post.span_id
    assert one("registry.reserve").parent_id == post.span_id
    assert hand_off.parent_id == post.span_id
    assert worker.service == "dragoman-worker" and worker.parent_id == hand_off.span_id
    for step in ("agent.take_idle", "janus.bridge", "agent.answer"):
        assert one(step).parent_id == worker.span_id, step
    assert agent.service == "dragoman-agent" and agent.parent_id == worker.span_id
    for step in ("agent.accept", "agent.media_up", "agent.first_packet"):
        assert one(step).parent_id == agent.span_id, step
    for span in (post, worker, agent):
        attributes = {k: span.attributes.get(f"dragoman.{k}") for k in ("call_id", "provider")}
        assert attributes == {"call_id": call_id, "provider": "local"}, span
        assert (span.attributes["dragoman.source"], span.attributes["dragoman.target"]) == (
            "ja",
            "en",
        )
        assert span.attributes["dragoman.mode"] == "one_way"
    assert agent.attributes["dragoman.end_reason"] == "remote_hangup"

    utterances = by_name.get("utterance", [])
    assert utterances and all(u.parent_id == agent.span_id for u in utterances)
    for u in utterances:
        steps = [s for s in trace if s.parent_id == u.span_id]
        assert {"stt_translate", "first_audio"} <= {s.name for s in steps}, steps
        assert all(u.start_ns <= s.start_ns <= s.end_ns <= u.end_ns for s in steps)
        # The utterance lies within the call.
        assert agent.start_ns <= u.start_ns <= u.end_ns <= agent.end_ns


def _spans_of_call(receiver: Receiver, call_id: str) -> list[Span]:
    """Every span of the trace whose ``agent.call`` is ``call_id``'s (none before it ends)."""
    spans = receiver.snapshot()
    agent = next(
        (
            s
            for s in spans
            if s.name == "agent.call" and s.attributes.get("dragoman.call_id") == call_id
        ),
        None,
    )
    return [s for s in spans if agent and s.trace_id == agent.trace_id]


def test_the_trace_crosses_the_http_hand_off_between_api_and_worker_processes(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = {
        **os.environ,
        **NO_ABUSE_LIMITS,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "DRAGOMAN_INTERNAL_TOKEN": "test-token-" + "x" * 24,
        "DRAGOMAN_LOG_LEVEL": "WARNING",
        "DRAGOMAN_MAX_CALLS": "1",
        "DRAGOMAN_LOCAL_CAPACITY": "1",
    }
    exe = str(Path(sys.executable).with_name("dragoman"))
    api_port, worker_port = free_serve_port(), free_port()
    procs: list[subprocess.Popen] = []

    def start(kind: str, **extra: str) -> None:
        log = (tmp_path / f"{kind}.log").open("w")
        procs.append(
            subprocess.Popen(
                [exe, kind], env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT
            )
        )

    def log_of(kind: str) -> str:
        return (tmp_path / f"{kind}.log").read_text(errors="replace")[-3000:]

    def free_slot() -> bool:
        try:
            r = httpx.get(f"{internal_url(api)}/healthz", timeout=5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("free_slots", 0) >= 1

    with RedisServer() as redis:
        try:
            start("worker", DRAGOMAN_REGISTRY=redis.url, DRAGOMAN_WORKER_PORT=str(worker_port))
            start("api", DRAGOMAN_REGISTRY=redis.url, DRAGOMAN_PORT=str(api_port))
            api = f"http://127.0.0.1:{api_port}"
            try:
                wait_until(free_slot, 180, interval=0.5, what="the worker's slot at the api")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{log_of('worker')}\n{log_of('api')}") from e

            async def call() -> str:
                caller = Caller(api, source="ja", target="en", send_audio=False)
                try:
                    result = await caller.call()
                    assert result.status == 201, result.error
                    await caller.wait_for(lambda m: m.get("state") == "listening", 15)
                    async with httpx.AsyncClient() as http:
                        r = await http.delete(f"{api}/v1/calls/{result.call_id}", timeout=5)
                    assert r.status_code == 204
                    await poll(lambda: _spans_of_call(receiver, result.call_id), 30, "its trace")
                    return result.call_id
                finally:
                    await caller.close()

            call_id = asyncio.run(call())
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    trace = _spans_of_call(receiver, call_id)
    named = {s.name: s for s in trace}
    post, hand_off = named["POST /v1/calls"], named["worker.hand_off"]
    worker, agent = named["worker.start_call"], named["agent.call"]
    assert (post.service, hand_off.service) == ("dragoman-api", "dragoman-api")
    assert post.parent_id == "" and hand_off.parent_id == post.span_id
    # The worker process read the hand-off's context from the request it was sent.
    assert worker.service == "dragoman-worker" and worker.parent_id == hand_off.span_id
    assert agent.service == "dragoman-agent" and agent.parent_id == worker.span_id
    assert worker.attributes["dragoman.call_id"] == call_id
