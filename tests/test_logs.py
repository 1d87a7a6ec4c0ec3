"""Logs an operator can follow, from a real ``dragoman serve`` logging JSON at INFO: the
libraries stay quiet, each call ends with one structured line, and the agent's lines about
a call carry its id."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import Server, start_server, stop_server, wait_until

from dragoman.bench.caller import Caller
from dragoman.contract.calls import CallRequest
from dragoman.worker.calls.call_record import CallRecord, end_fields


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("json-logs"),
        DRAGOMAN_LOG_FORMAT="json",
        DRAGOMAN_LOG_LEVEL="INFO",
        DRAGOMAN_MAX_CALLS="1",
        DRAGOMAN_PROVIDER="local",
    )
    yield srv
    assert stop_server(srv) == 0, srv.log_tail()


def records(server: Server) -> list[dict]:
    """The log's JSON lines (the serve's progress prints to its terminal are plain text)."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def call_end(server: Server, call_id: str) -> dict | None:
    ends = [r for r in records(server) if r.get("logger") == "dragoman.calls"]
    return next((r for r in ends if r.get("call_id") == call_id), None)


async def test_a_call_ends_with_one_json_line_and_its_agent_logs_carry_its_id(
    json_server: Server,
) -> None:
    caller = Caller(json_server.url, source="ja", target="en", send_audio=False)
    try:
        result = await caller.call()
        assert result.status == 201, result.error
        await caller.wait_for(lambda m: m.get("state") == "listening", 15)
        assert call_end(json_server, result.call_id) is None  # not before it ends
        r = httpx.delete(f"{json_server.url}/v1/calls/{result.call_id}", timeout=5)
        assert r.status_code == 204
        end = wait_until(
            lambda: call_end(json_server, result.call_id), 15, what="the call's end line"
        )
    finally:
        await caller.close()

    assert end["level"] == "INFO" and end["message"].startswith("call ended")
    assert end["reason"] == "remote_hangup"
    assert (end["provider"], end["mode"], end["source"], end["target"]) == (
        "local",
        "one_way",
        "ja",
        "en",
    )
    assert end["interpretation"] in ("simultaneous", "consecutive")
    assert end["node"] and end["duration_s"] >= 0
    assert end["answer_ms"] > 0 and end["connect_ms"] is not None  # its WebRTC came up
    ended_by = [
        r
        for r in records(json_server)
        if r.get("call_id") == result.call_id and r.get("process_kind") == "agent"
    ]
    assert any("call ending" in r["message"] for r in ended_by), ended_by
    # One end line per call, however many processes saw it end.
    ends = [r for r in records(json_server) if r.get("logger") == "dragoman.calls"]
    assert [r["call_id"] for r in ends].count(result.call_id) == 1


def test_library_chatter_stays_out_of_the_log(json_server: Server) -> None:
    """The worker pings its inference service every second over HTTP: httpx would log each
    request at INFO; at DRAGOMAN_LOG_LEVEL=INFO it does not."""
    # A ping answered (its queue stats recorded): httpx logged it by then, if it would.
    wait_until(lambda: json_server.health()["inference"]["stt"] is not None, 15, what="a ping")
    log = json_server.log_path.read_text(errors="replace")
    assert "HTTP Request:" not in log
    quiet = ("httpx", "httpcore", "websockets", "uvicorn.access", "uvicorn.error", "aiortc")
    chatter = [r for r in records(json_server) if r.get("logger") in quiet]
    assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in chatter), chatter


def test_call_end_fields_from_the_marks_the_worker_saw() -> None:
    """Times are the node's monotonic clock: taken at 100 s, WebRTC up at 100.25 s; two
    utterances, the second spoken while its speaker still talked (simultaneous): 0 s."""
    record = CallRecord(answer_ms=31.5)
    record.on_marks({"vad_stop": 103.0, "first_audio_out": 104.5})
    record.on_marks({"source_end": 110.0, "first_audio_out": 109.0})
    record.on_marks({"translated": 111.0})  # no audio: not an utterance heard
    request = CallRequest(
        call_id="c1", sdp="", sdp_type="offer", source="ja", target="en", provider="local"
    )
    fields = end_fields("c1", "n1", request, "hangup", record, 100.0, 100.25, 130.0)
    assert fields["duration_s"] == 30.0 and fields["answer_ms"] == 31.5
    assert fields["connect_ms"] == 250.0 and fields["first_audio_ms"] == 4500.0
    assert fields["utterances"] == 2
    assert (fields["speech_to_audio_p50_ms"], fields["speech_to_audio_max_ms"]) == (750, 1500)
    # A call that ended before its agent took it: what is known, and None for the rest.
    early = end_fields("c2", "n1", None, "answer_timeout", CallRecord(), None, None, 130.0)
    assert early["reason"] == "answer_timeout" and early["provider"] is None
    assert early["duration_s"] is None and early["connect_ms"] is None
