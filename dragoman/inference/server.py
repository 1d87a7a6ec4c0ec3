"""The node-local inference service: one process per node, models loaded once.

Agent processes never load Whisper or Piper themselves (that would cost hundreds of MB and
seconds per call); they send utterances here, as HTTP over a Unix socket (the API is in
``wire``). Requests run concurrently on a few worker threads, in the order the service
chooses (``lanes``); the models release the GIL while computing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from dragoman import logs
from dragoman.config import Settings
from dragoman.inference.engines import PiperEngine, WhisperEngine, Window, cpu_count
from dragoman.inference.lanes import PriorityLane, lane_size
from dragoman.inference.models import resolve_piper, resolve_whisper
from dragoman.inference.routes import create_app

log = logging.getLogger("dragoman.inference")


class InferenceServer:
    """The models and their lanes; the HTTP routes in ``routes`` call these methods.

    Whisper's requests go through a ``PriorityLane`` (finals before partials, stale partials
    dropped) sized to the node's cores; TTS has a lane of its own, so speech output never
    queues behind a transcription."""

    def __init__(self, whisper: Any, piper: Any, *, workers: int, threads: int = 1) -> None:
        self.whisper = whisper
        self.piper = piper
        self._stt_lane = PriorityLane(workers, threads, name="stt")
        self._tts_pool = ThreadPoolExecutor(1, thread_name_prefix="tts")
        self.load_ms = 0.0
        self.retried = 0  # decodes the repetition guard did again with beam search

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceServer:
        t0 = time.perf_counter()
        workers, threads = lane_size(
            cpu_count(), settings.whisper_threads, settings.whisper_workers
        )
        whisper_src = resolve_whisper(settings.whisper_model_path, settings.cache_dir)
        window = Window(min_s=settings.whisper_window_min_s, pad_s=settings.whisper_window_pad_s)
        whisper = WhisperEngine(
            whisper_src, settings.whisper_compute_type, threads, workers, window=window
        )
        piper = PiperEngine(
            resolve_piper(settings.piper_voice_path), settings.audio_out_sample_rate
        )
        server = cls(whisper, piper, workers=workers, threads=threads)
        server.load_ms = (time.perf_counter() - t0) * 1000
        log.info(
            "models loaded in %.0f ms (whisper=%s, %d workers × %d threads, window %s)",
            server.load_ms,
            whisper_src,
            workers,
            threads,
            window.label(),
        )
        return server

    def warm_up(self) -> None:
        # The first decode allocates buffers and JITs kernels; pay that at start, not on a call.
        self.whisper.run(bytes(16000 * 2), "en", "transcribe")
        for _ in self.piper.synthesize("Ready."):
            pass

    async def stt(
        self,
        pcm16_16k: bytes,
        language: str | None,
        task: str,
        *,
        prompt: str | None = None,
        words: bool = False,
        priority: str = "final",
        stream: str | None = None,
    ) -> dict[str, Any]:
        """Raises ``Superseded`` for a queued partial a newer request of its stream replaced."""
        result, queue_ms = await self._stt_lane.run(
            self.whisper.run,
            pcm16_16k,
            language,
            task,
            prompt=prompt,
            words=words,
            priority=priority,
            stream=stream,
        )
        self.retried += result.retried
        answer = {
            "text": result.text,
            "language": result.language,
            "duration_s": result.duration_s,
            "compute_ms": round(result.compute_ms, 1),
            "queue_ms": round(queue_ms, 1),
            "window_s": result.window_s,
        }
        if words:
            answer["words"] = list(result.words or ())
            answer["segments"] = list(result.segments or ())
        return answer

    async def identify(self, pcm16_16k: bytes, candidates: list[str]) -> dict[str, Any]:
        (language, probs), queue_ms = await self._stt_lane.run(
            self.whisper.identify, pcm16_16k, candidates
        )
        return {"language": language, "probs": probs, "queue_ms": round(queue_ms, 1)}

    @property
    def tts_rate(self) -> int:
        return self.piper.out_rate

    async def tts(self, text: str, speed: float = 1.0) -> AsyncIterator[bytes]:
        """PCM16 chunks as Piper produces them. Closing the iterator early (the caller hung
        up) stops the synthesis at the next chunk, so the one TTS lane is free again."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for pcm in self.piper.synthesize(text, speed):
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, pcm)
            except BaseException as e:  # handed to the request, which reports it
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        # Not awaited: once told to stop, it ends by itself after the chunk in progress.
        loop.run_in_executor(self._tts_pool, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def ping(self) -> dict[str, Any]:
        stt = self._stt_lane.stats() | {"retried": self.retried}
        return {"ok": True, "pid": os.getpid(), "load_ms": self.load_ms, "stt": stt}


class Server(uvicorn.Server):
    """uvicorn, minus its signal handlers: the worker decides when this process stops (a
    terminal's Ctrl-C reaches the whole process group and must not end it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listen(socket_path: Path) -> socket.socket:
    # Bound here rather than by uvicorn's ``uds=``, which makes the socket world-writable:
    # it keeps the permissions of the directory it is created in, as before.
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # left over by a crashed predecessor
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(socket_path))
    return sock


async def _serve(settings: Settings, socket_path: Path) -> None:
    server_impl = InferenceServer.from_settings(settings)
    await asyncio.get_running_loop().run_in_executor(None, server_impl.warm_up)
    server = http_server(create_app(server_impl))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    loop.add_signal_handler(signal.SIGTERM, stop)

    async def follow_parent(ppid: int) -> None:
        # If the worker is killed (kill -9, OOM) nobody would stop us: leave with it.
        while os.getppid() == ppid:
            await asyncio.sleep(1.0)
        stop()

    watcher = asyncio.create_task(follow_parent(os.getppid()))
    log.info("inference service listening on %s", socket_path)
    try:
        await server.serve(sockets=[listen(socket_path)])
    finally:
        watcher.cancel()


def http_server(app: Starlette) -> Server:
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_config=None,  # keep the process's logging as set up; uvicorn's would replace it
        http="h11",
        # Longer than an agent's client keeps an idle connection, so the client always
        # closes first and never sends a request on a connection the service is closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=2,
    )
    return Server(config)


def run_inference_service(settings_json: str, socket_path: str) -> None:
    """Process entry point (spawned by the worker)."""
    settings = Settings.model_validate_json(settings_json)
    logs.setup(settings, "inference")  # uvicorn's start-up banner is below WARNING
    # SIGINT from a terminal's Ctrl-C goes to the whole group; the worker decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(settings, Path(socket_path)))
