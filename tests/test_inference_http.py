"""The inference service's HTTP API over its Unix socket, with stand-in models: what the
agents' client sends and gets back, streaming, errors and hang-ups. (The real models are
exercised by the call tests.)"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dragoman.inference import wire
from dragoman.inference.client import InferenceClient, InferenceError, SttResult
from dragoman.inference.routes import create_app
from dragoman.inference.server import http_server, listen


class FakeModels:
    """Stands in for InferenceServer: the same async methods, no model behind them."""

    tts_rate = 22050

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.release = asyncio.Event()  # the TTS's second chunk waits for it
        self.tts_closed = asyncio.Event()
        self.fail: str | None = None

    async def stt(self, pcm: bytes, language: str | None, task: str) -> dict[str, Any]:
        self.calls.append(("stt", len(pcm), language, task))
        if self.fail:
            raise RuntimeError(self.fail)
        return {"text": "hello", "language": language or "en", "duration_s": 1.0, "compute_ms": 5}

    async def identify(self, pcm: bytes, candidates: list[str]) -> dict[str, Any]:
        self.calls.append(("identify", len(pcm), candidates))
        return {"language": candidates[-1], "probs": {c: 0.5 for c in candidates}}

    async def tts(self, text: str) -> AsyncIterator[bytes]:
        self.calls.append(("tts", text))
        try:
            if self.fail == "tts at once":
                raise RuntimeError("no voice")
            yield b"\x01\x00" * 1001  # odd-sized reads must still give whole samples
            await self.release.wait()
            if self.fail == "tts midway":
                raise RuntimeError("piper broke")
            yield b"\x02\x00" * 3
        finally:
            self.tts_closed.set()

    def ping(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "load_ms": 1.0}


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[FakeModels, str]]:
    models = FakeModels()
    path = tmp_path / "inference.sock"
    server = http_server(create_app(models))  # type: ignore[arg-type]
    task = asyncio.create_task(server.serve(sockets=[listen(path)]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield models, str(path)
    server.should_exit = True
    await task


@pytest.fixture
async def client(service: tuple[FakeModels, str]) -> AsyncIterator[InferenceClient]:
    c = InferenceClient(service[1], timeout_s=5.0)
    yield c
    await c.aclose()


async def test_stt_identify_and_ping(service: tuple[FakeModels, str], client: InferenceClient):
    models, _ = service
    pcm = bytes(32000)
    assert await client.stt(pcm, "ja", "translate") == SttResult("hello", "ja", 1.0, 5)
    assert (await client.stt(pcm, None, "transcribe")).language == "en"  # none: detected
    assert await client.identify(pcm, ["ja", "ko"]) == "ko"
    assert (await client.ping())["pid"] == os.getpid()
    assert models.calls == [
        ("stt", 32000, "ja", "translate"),
        ("stt", 32000, None, "transcribe"),
        ("identify", 32000, ["ja", "ko"]),
    ]


async def test_one_connection_serves_an_agents_requests(
    service: tuple[FakeModels, str], client: InferenceClient
) -> None:
    seen: set[Any] = set()
    for _ in range(5):
        await client.ping()
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        seen.update(id(c) for c in pool.connections)
    assert len(seen) == 1


async def test_tts_streams_its_first_chunk_before_the_sentence_is_done(
    service: tuple[FakeModels, str], client: InferenceClient
) -> None:
    models, _ = service
    chunks = client.tts("Hello there.")
    pcm, rate = await asyncio.wait_for(anext(chunks), 5)  # the second is still held back
    assert rate == 22050 and len(pcm) % 2 == 0
    models.release.set()
    rest = [p async for p, _ in chunks]
    assert b"".join([pcm, *rest]) == b"\x01\x00" * 1001 + b"\x02\x00" * 3
    assert models.calls == [("tts", "Hello there.")]


async def test_a_caller_hanging_up_mid_sentence_stops_it_quietly(
    service: tuple[FakeModels, str], client: InferenceClient, caplog: pytest.LogCaptureFixture
) -> None:
    models, _ = service
    caplog.set_level(logging.INFO)
    chunks = client.tts("A long sentence.")
    await anext(chunks)
    await chunks.aclose()  # the call ended while it spoke
    await asyncio.wait_for(models.tts_closed.wait(), 5)  # the service stopped synthesising
    assert (await client.ping())["ok"]  # and serves on
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize("fail", ["tts at once", "tts midway"])
async def test_a_failed_synthesis_is_an_inference_error(
    service: tuple[FakeModels, str], client: InferenceClient, fail: str
) -> None:
    models, _ = service
    models.fail = fail
    models.release.set()
    with pytest.raises(InferenceError) as e:
        async for _ in client.tts("Hello."):
            pass
    if fail == "tts at once":
        assert "no voice" in str(e.value)  # the service's reason, as before
    assert (await client.ping())["ok"]


async def test_a_failed_request_carries_the_services_reason(
    service: tuple[FakeModels, str], client: InferenceClient
) -> None:
    service[0].fail = "model exploded"
    with pytest.raises(InferenceError, match="model exploded"):
        await client.stt(b"\x00\x00", "en", "transcribe")


async def test_a_body_over_the_limit_is_refused(
    service: tuple[FakeModels, str], client: InferenceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MAX_BODY", 1000)
    with pytest.raises(InferenceError, match="too large"):
        await client.stt(bytes(1002), "en", "transcribe")
    assert service[0].calls == []


async def test_no_service_is_an_inference_error(tmp_path: Path) -> None:
    client = InferenceClient(tmp_path / "nobody.sock", timeout_s=1.0)
    try:
        with pytest.raises(InferenceError, match="unreachable"):
            await client.stt(b"", "en", "transcribe")
        with pytest.raises(InferenceError):
            async for _ in client.tts("Hello."):
                pass
        with pytest.raises(InferenceError, match="ping failed"):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_service_that_does_not_answer_times_out(tmp_path: Path) -> None:
    path = tmp_path / "deaf.sock"
    sock = listen(path)
    sock.listen()  # accepts connections, never answers: a stopped (SIGSTOP) service
    client = InferenceClient(path, timeout_s=0.3)
    try:
        with pytest.raises(InferenceError, match="ping failed"):
            await client.ping()
        with pytest.raises(InferenceError, match="speech-to-text failed"):
            await client.stt(b"\x00\x00", "en", "transcribe")
    finally:
        await client.aclose()
        sock.close()


def test_the_agents_import_of_the_client_brings_its_http_stack() -> None:
    """The forkserver imports the agent module, hence this client: what a request would
    import lazily must already be there, so agents share it instead of each loading it."""
    import subprocess
    import sys

    code = (
        "import sys; import dragoman.inference.client; "
        "print(all(m in sys.modules for m in "
        "('httpx', 'httpcore._backends.anyio', 'anyio._backends._asyncio')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
