"""The node-local inference service: one process per node, models loaded once.

Agent processes never load Whisper or Piper themselves (that would cost hundreds of MB and
seconds per call); they send utterances here over a Unix socket. Requests run concurrently
on a small thread pool; the models release the GIL while computing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dragoman.config import Settings
from dragoman.inference.engines import PiperEngine, WhisperEngine
from dragoman.inference.models import resolve_piper, resolve_whisper
from dragoman.inference.protocol import read_message, write_message

log = logging.getLogger("dragoman.inference")


class InferenceServer:
    def __init__(self, settings: Settings) -> None:
        t0 = time.perf_counter()
        whisper_src = resolve_whisper(settings.whisper_model_path, settings.cache_dir)
        self.whisper = WhisperEngine(
            whisper_src,
            settings.whisper_compute_type,
            settings.whisper_threads,
            settings.whisper_workers,
        )
        self.piper = PiperEngine(
            resolve_piper(settings.piper_voice_path), settings.audio_out_sample_rate
        )
        # Whisper decodes run in parallel (num_workers); TTS gets its own lane so speech
        # output never queues behind a long transcription.
        self._stt_pool = ThreadPoolExecutor(settings.whisper_workers, thread_name_prefix="stt")
        self._tts_pool = ThreadPoolExecutor(1, thread_name_prefix="tts")
        self.load_ms = (time.perf_counter() - t0) * 1000
        log.info("models loaded in %.0f ms (whisper=%s)", self.load_ms, whisper_src)

    def warm_up(self) -> None:
        # The first decode allocates buffers and JITs kernels; pay that at start, not on a call.
        self.whisper.run(bytes(16000 * 2), "en", "transcribe")
        for _ in self.piper.synthesize("Ready."):
            pass

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    header, payload = await read_message(reader)
                except asyncio.IncompleteReadError:
                    return
                op = header.get("op")
                try:
                    if op == "stt":
                        result = await loop.run_in_executor(
                            self._stt_pool,
                            self.whisper.run,
                            payload,
                            header.get("language"),
                            header.get("task", "transcribe"),
                        )
                        await write_message(writer, {"ok": True, **result.__dict__})
                    elif op == "identify":
                        language, probs = await loop.run_in_executor(
                            self._stt_pool,
                            self.whisper.identify,
                            payload,
                            [str(c) for c in header.get("candidates", [])],
                        )
                        await write_message(
                            writer, {"ok": True, "language": language, "probs": probs}
                        )
                    elif op == "tts":
                        await self._stream_tts(writer, str(header.get("text", "")))
                    elif op == "ping":
                        await write_message(
                            writer, {"ok": True, "pid": os.getpid(), "load_ms": self.load_ms}
                        )
                    else:
                        await write_message(writer, {"ok": False, "error": f"unknown op {op!r}"})
                except (ConnectionError, asyncio.CancelledError):
                    raise  # the client hung up mid-answer (a call ended): nothing to report
                except Exception as e:  # one bad request must not take the node's models down
                    log.exception("inference request %s failed", op)
                    await write_message(writer, {"ok": False, "error": str(e)})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _stream_tts(self, writer: asyncio.StreamWriter, text: str) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        def produce() -> None:
            try:
                for pcm in self.piper.synthesize(text):
                    loop.call_soon_threadsafe(queue.put_nowait, pcm)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        fut = loop.run_in_executor(self._tts_pool, produce)
        rate = self.piper.out_rate
        while (pcm := await queue.get()) is not None:
            await write_message(writer, {"ok": True, "sample_rate": rate}, pcm)
        await fut
        await write_message(writer, {"ok": True, "done": True, "sample_rate": rate})


async def _serve(settings: Settings, socket_path: Path) -> None:
    server_impl = InferenceServer(settings)
    await asyncio.get_running_loop().run_in_executor(None, server_impl.warm_up)
    server = await asyncio.start_unix_server(server_impl.handle, path=str(socket_path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("inference service listening on %s", socket_path)

    async def follow_parent(ppid: int) -> None:
        # If the worker is killed (kill -9, OOM) nobody would stop us: leave with it.
        while os.getppid() == ppid:
            await asyncio.sleep(1.0)
        stop.set()

    watcher = asyncio.create_task(follow_parent(os.getppid()))
    async with server:
        await stop.wait()
    watcher.cancel()


def run_inference_service(settings_json: str, socket_path: str) -> None:
    """Process entry point (spawned by the worker)."""
    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s inference %(message)s")
    # SIGINT from a terminal's Ctrl-C goes to the whole group; the worker decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(FileNotFoundError):
        Path(socket_path).unlink()  # left over by a crashed predecessor
    asyncio.run(_serve(settings, Path(socket_path)))
