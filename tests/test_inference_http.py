"""The inference service's HTTP API over its Unix socket, with stand-in models: what the
agents' client sends and gets back, streaming, errors and hang-ups; the order the service
runs Whisper's requests in (finals first, stale partials dropped). (The real models are
exercised by the call tests, and word timings by the last test here.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from dragoman.inference import wire
from dragoman.inference.client import (
    InferenceClient,
    InferenceError,
    Segment,
    SttResult,
    Superseded,
    Word,
)
from dragoman.inference.engines import Transcript
from dragoman.inference.routes import create_app
from dragoman.inference.server import InferenceServer, http_server, listen

WORDS = [
    {"start": 0.1, "end": 0.4, "text": " Hello", "probability": 0.9},
    {"start": 0.4, "end": 0.8, "text": " there.", "probability": 0.8},
]


class FakeModels:
    """Stands in for InferenceServer: the same async methods, no model behind them."""

    tts_rate = 22050

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.options: list[dict[str, Any]] = []
        self.release = asyncio.Event()  # the TTS's second chunk waits for it
        self.tts_closed = asyncio.Event()
        self.fail: str | None = None

    async def stt(
        self, pcm: bytes, language: str | None, task: str, **options: Any
    ) -> dict[str, Any]:
        self.calls.append(("stt", len(pcm), language, task))
        self.options.append(options)
        if self.fail:
            raise RuntimeError(self.fail)
        answer = {
            "text": "hello",
            "language": language or "en",
            "duration_s": 1.0,
            "compute_ms": 5,
        }
        if options.get("words"):
            answer |= {"words": WORDS, "segments": [{"start": 0.1, "end": 0.8, "text": "x"}]}
        return answer

    async def identify(self, pcm: bytes, candidates: list[str]) -> dict[str, Any]:
        self.calls.append(("identify", len(pcm), candidates))
        return {"language": candidates[-1], "probs": {c: 0.5 for c in candidates}}

    async def tts(self, text: str, speed: float = 1.0) -> AsyncIterator[bytes]:
        self.calls.append(("tts", text) if speed == 1.0 else ("tts", text, speed))
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


@contextlib.asynccontextmanager
async def serving(app: Starlette, path: Path) -> AsyncIterator[None]:
    server = http_server(app)
    task = asyncio.create_task(server.serve(sockets=[listen(path)]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[FakeModels, str]]:
    models = FakeModels()
    path = tmp_path / "inference.sock"
    async with serving(create_app(models), path):  # type: ignore[arg-type]
        yield models, str(path)


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


async def test_stt_options_travel_and_words_come_back(
    service: tuple[FakeModels, str], client: InferenceClient
) -> None:
    models, _ = service
    result = await client.stt(
        bytes(64), "ja", "translate", prompt="x" * 300 + "end", words=True, stream="c1/en"
    )
    assert result.words == (Word(0.1, 0.4, " Hello", 0.9), Word(0.4, 0.8, " there.", 0.8))
    assert result.segments == (Segment(0.1, 0.8, "x"),)
    # Only the prompt's end travels; the defaults are a final without words.
    assert models.options[0] == {
        "prompt": "x" * (wire.PROMPT_CHARS - 3) + "end",
        "words": True,
        "priority": "final",
        "stream": "c1/en",
    }
    await client.stt(bytes(64), "ja", "transcribe")
    assert models.options[1] == {
        "prompt": None,
        "words": False,
        "priority": "final",
        "stream": None,
    }


@pytest.mark.parametrize(
    "query",
    ["priority=urgent", "words=maybe", "task=summarise"],
)
async def test_a_bad_stt_parameter_is_a_400(service: tuple[FakeModels, str], query: str) -> None:
    models, path = service
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=path)) as http:
        r = await http.post(f"http://inference{wire.STT}?language=ja&{query}", content=bytes(8))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert models.calls == []


# --- the order the service runs Whisper's requests in, with the real InferenceServer ----
class FakeWhisper:
    """Stands in for WhisperEngine: each request's language names it; a request whose name
    starts with "hold" blocks its worker until ``gate`` opens."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.options: list[dict[str, Any]] = []
        self.holding = threading.Event()
        self.gate = threading.Event()

    def run(self, pcm: bytes, language: str, task: str, **options: Any) -> Transcript:
        self.ran.append(language)
        self.options.append(options)
        if language.startswith("hold"):
            self.holding.set()
            assert self.gate.wait(10), "the test never opened the gate"
        return Transcript(
            text=f"{task} of {language}",
            language=language,
            duration_s=len(pcm) / 32000,
            compute_ms=1.0,
            words=tuple(WORDS) if options.get("words") else None,
            segments=() if options.get("words") else None,
            window_s=10.0,
        )

    def identify(self, pcm: bytes, candidates: list[str]) -> tuple[str, dict[str, float]]:
        self.ran.append("identify")
        return candidates[0], dict.fromkeys(candidates, 0.5)


class FakePiper:
    out_rate = 16000

    def __init__(self) -> None:
        self.speeds: list[float] = []

    def synthesize(self, text: str, speed: float = 1.0) -> Iterator[bytes]:
        self.speeds.append(speed)
        yield b"\x01\x00" * 10


@pytest.fixture
async def lanes(
    tmp_path: Path,
) -> AsyncIterator[tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient]]:
    whisper, piper = FakeWhisper(), FakePiper()
    impl = InferenceServer(whisper, piper, workers=1)  # one worker: what waits is visible
    path = tmp_path / "lanes.sock"
    client = InferenceClient(path, timeout_s=10.0)
    try:
        async with serving(create_app(impl), path):
            yield impl, whisper, piper, client
    finally:
        whisper.gate.set()  # never leave a worker blocked
        await client.aclose()


async def until(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_final_runs_before_partials_queued_earlier(
    lanes: tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient],
) -> None:
    impl, whisper, _, client = lanes
    pcm = bytes(3200)
    busy = asyncio.create_task(client.stt(pcm, "hold", "translate"))
    await asyncio.to_thread(whisper.holding.wait, 5)
    partials = []
    for i, stream in enumerate(("call-a", "call-b", None)):
        partials.append(
            asyncio.create_task(
                client.stt(pcm, f"p{i}", "translate", priority="partial", stream=stream)
            )
        )
        await until(
            f"partial {i} queued", lambda i=i: impl.ping()["stt"]["queued"]["partial"] == i + 1
        )
    final = asyncio.create_task(client.stt(pcm, "f", "transcribe"))
    await until("the final queued", lambda: impl.ping()["stt"]["queued"]["final"] == 1)
    assert impl.ping()["stt"]["running"] == 1

    whisper.gate.set()
    await busy
    done = await final
    assert [p.text for p in await asyncio.gather(*partials)] == [
        f"translate of p{i}" for i in range(3)
    ]
    assert whisper.ran == ["hold", "f", "p0", "p1", "p2"]  # the final overtook all three
    assert done.queue_ms > 0 and isinstance(done.queue_ms, float)
    stats = impl.ping()["stt"]
    assert stats["queued"] == {"final": 0, "partial": 0}
    assert stats["done"] == {"final": 2, "partial": 3}
    assert stats["wait_ms"]["partial"]["count"] == 3
    assert stats["workers"] == 1


async def test_a_queued_partial_is_superseded_by_a_newer_one_of_its_stream(
    lanes: tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient],
) -> None:
    impl, whisper, _, client = lanes
    pcm = bytes(3200)
    # A running partial is never dropped: only what still waits.
    running = asyncio.create_task(
        client.stt(pcm, "hold", "translate", priority="partial", stream="s")
    )
    await asyncio.to_thread(whisper.holding.wait, 5)
    old = asyncio.create_task(client.stt(pcm, "old", "translate", priority="partial", stream="s"))
    other = asyncio.create_task(
        client.stt(pcm, "other", "translate", priority="partial", stream="t")
    )
    await until("two partials queued", lambda: impl.ping()["stt"]["queued"]["partial"] == 2)
    new = asyncio.create_task(
        client.stt(pcm, "new", "translate", priority="partial", stream="s", words=True)
    )
    with pytest.raises(Superseded) as e:
        await old  # answered at once, while the worker is still busy
    assert not isinstance(e.value, InferenceError)  # callers take that as "service down"
    assert impl.ping()["stt"]["superseded"] == 1

    whisper.gate.set()
    assert (await running).text == "translate of hold"
    assert (await new).words[0] == Word(0.1, 0.4, " Hello", 0.9)
    assert (await other).text == "translate of other"
    assert whisper.ran == ["hold", "other", "new"]
    assert whisper.options[-1] == {"prompt": None, "words": True}
    assert impl.ping()["stt"]["queued"]["partial"] == 0


async def test_a_final_of_the_stream_supersedes_its_queued_partial_too(
    lanes: tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient],
) -> None:
    impl, whisper, _, client = lanes
    busy = asyncio.create_task(client.stt(bytes(32), "hold", "translate"))
    await asyncio.to_thread(whisper.holding.wait, 5)
    partial = asyncio.create_task(
        client.stt(bytes(32), "partial", "translate", priority="partial", stream="s")
    )
    await until("queued", lambda: impl.ping()["stt"]["queued"]["partial"] == 1)
    final = asyncio.create_task(client.stt(bytes(32), "final", "translate", stream="s"))
    with pytest.raises(Superseded):
        await partial
    whisper.gate.set()
    assert (await final).text == "translate of final"
    await busy
    # A final is never dropped, whatever comes after it.
    whisper.gate.clear()
    whisper.holding.clear()
    busy = asyncio.create_task(client.stt(bytes(32), "hold", "translate"))
    await asyncio.to_thread(whisper.holding.wait, 5)
    final = asyncio.create_task(client.stt(bytes(32), "final2", "translate", stream="s"))
    await until("queued", lambda: impl.ping()["stt"]["queued"]["final"] == 1)
    later = asyncio.create_task(
        client.stt(bytes(32), "later", "translate", priority="partial", stream="s")
    )
    await until("queued", lambda: impl.ping()["stt"]["queued"]["partial"] == 1)
    whisper.gate.set()
    assert [r.text for r in await asyncio.gather(busy, final, later)] == [
        "translate of hold",
        "translate of final2",
        "translate of later",
    ]
    assert impl.ping()["stt"]["superseded"] == 1


async def test_the_409_is_superseded_on_the_wire(
    lanes: tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient],
) -> None:
    impl, whisper, _, client = lanes
    busy = asyncio.create_task(client.stt(bytes(32), "hold", "translate"))
    await asyncio.to_thread(whisper.holding.wait, 5)
    transport = httpx.AsyncHTTPTransport(uds=client.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://inference") as http:
        url = f"{wire.STT}?language=ja&priority=partial&stream=s"
        old = asyncio.create_task(http.post(url, content=bytes(32)))
        await until("queued", lambda: impl.ping()["stt"]["queued"]["partial"] == 1)
        new = asyncio.create_task(http.post(url, content=bytes(32)))
        assert (await old).status_code == 409
        assert (await old).json()["error"]["code"] == wire.SUPERSEDED
        whisper.gate.set()
        assert (await new).status_code == 200
    await busy


async def test_tts_speed_reaches_piper_and_a_bad_one_is_refused(
    lanes: tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient],
) -> None:
    _, _, piper, client = lanes
    assert [p async for p, _ in client.tts("Hi.")]  # the default: 1
    assert [p async for p, _ in client.tts("Hi.", speed=1.25)]
    assert [p async for p, _ in client.tts("Hi.", speed=9)]  # the client keeps it in range
    assert piper.speeds == [1.0, 1.25, wire.TTS_SPEED_MAX]
    with pytest.raises(ValueError):
        async for _ in client.tts("Hi.", speed=0):
            pass
    transport = httpx.AsyncHTTPTransport(uds=client.socket_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://inference") as http:
        for bad in ("fast", "nan", "0", "-1", "2.5", "inf"):
            r = await http.post(f"{wire.TTS}?speed={bad}", content=b"Hi.")
            assert r.status_code == 400, bad
            assert "speed" in r.json()["error"]["message"]
    assert len(piper.speeds) == 3  # none of them reached Piper


async def test_the_lane_reports_for_metrics(
    lanes: tuple[InferenceServer, FakeWhisper, FakePiper, InferenceClient],
) -> None:
    impl, _, _, client = lanes
    await client.stt(bytes(32), "ja", "transcribe")
    assert await client.identify(bytes(32), ["ja", "en"]) == "ja"
    stt = (await client.ping())["stt"]
    assert stt["done"]["final"] == 2 and stt["superseded"] == 0 and stt["retried"] == 0
    waits = stt["wait_ms"]["final"]
    assert waits["count"] == 2 and waits["le_ms"]["5000"] == 2


# --- the real Whisper: word timings of a translation -----------------------------------
def test_word_times_of_a_real_translation_are_ordered_and_inside_the_audio(
    ja_speech: Path,
) -> None:
    from dragoman.config import Settings
    from dragoman.inference.engines import WhisperEngine, Window
    from dragoman.inference.models import resolve_whisper

    with wave.open(str(ja_speech)) as w:
        pcm, rate = np.frombuffer(w.readframes(w.getnframes()), np.int16), w.getframerate()
    import soxr

    pcm16 = soxr.resample(pcm, rate, 16000).astype(np.int16).tobytes()
    duration = len(pcm16) / 32000
    settings = Settings()
    engine = WhisperEngine(
        resolve_whisper(settings.whisper_model_path, settings.cache_dir),
        "int8",
        2,
        1,
        window=Window(min_s=10.0, pad_s=2.0),
    )
    english = engine.run(pcm16, "ja", "translate", prompt="Good morning.", words=True)
    assert english.text and english.words, english
    times = [(w["start"], w["end"]) for w in english.words]
    assert all(0.0 <= s <= e <= duration for s, e in times), times
    assert all(a[1] <= b[0] for a, b in zip(times, times[1:], strict=False)), times
    assert "".join(w["text"] for w in english.words).strip() == english.text
    assert len(english.words) == len(english.text.split())  # English words, not tokens
    assert english.segments and english.segments[-1]["end"] == times[-1][1]
    # The source caption shares the translation's encoding.
    source = engine.run(pcm16, "ja", "transcribe")
    assert "公園" in source.text and len(engine._encodings) == 1


# --- the repetition guard's retry -------------------------------------------------------
@pytest.mark.parametrize("second_loops", [False, True])
def test_a_looping_decode_is_done_again_with_beam_search(
    monkeypatch: pytest.MonkeyPatch, second_loops: bool
) -> None:
    """A greedy decode that loops (seen in a suite run: a 5.9 s Japanese utterance translated
    as "I will be in the middle of the morning." twice, then dropped) is decoded again with
    beam search on the same encoding; kept if that one does not loop, dropped if it does."""
    from dragoman.inference import engines

    engine = engines.WhisperEngine.__new__(engines.WhisperEngine)
    engine.window = engines.Window(min_s=10.0, pad_s=3.0)
    encodings: list[int] = []
    monkeypatch.setattr(engine, "_encoded", lambda pcm, audio, frames: encodings.append(frames))
    beams: list[int] = []

    def decode(encoded: Any, language: str, task: str, **kw: Any) -> engines.Decoded:
        beams.append(kw.get("beam_size", 1))
        looped = len(beams) == 1 or second_loops
        text = "Again. Again." if looped else "Tanaka gets up at seven."
        return engines.Decoded((1, 2), text, -0.3, 0.01, 1.0, looped)

    monkeypatch.setattr(engine, "decode", decode)
    out = engine.run(bytes(32000 * 6), "ja", "translate")
    assert beams == [1, engines.RETRY_BEAM] and out.retried
    assert encodings == [1000]  # one 10 s encoding serves both decodes
    assert out.text == ("" if second_loops else "Tanaka gets up at seven.")
