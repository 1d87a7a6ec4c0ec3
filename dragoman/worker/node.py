"""One node's worker: the node-local inference service, the media gateway (Janus) and the
pre-forked agent pool."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import tempfile
import time
from pathlib import Path

from dragoman.config import Settings, settings_for_child
from dragoman.inference.client import InferenceClient, InferenceError
from dragoman.inference.server import run_inference_service
from dragoman.worker.control import ControlHub
from dragoman.worker.gateway import MediaGateway
from dragoman.worker.pool import AgentPool

log = logging.getLogger("dragoman.worker")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tmpdir = tempfile.TemporaryDirectory(prefix="dragoman-")
        runtime = Path(self._tmpdir.name)
        if settings.inference_socket is not None:
            self.socket_path = str(settings.inference_socket)
        else:
            self.socket_path = str(runtime / "inference.sock")
        self._inference: multiprocessing.process.BaseProcess | None = None
        self.gateway = MediaGateway(settings, runtime / "janus")
        self.hub = ControlHub()
        self.pool = AgentPool(settings, self.socket_path, self.gateway, self.hub)

    async def start(self, on_progress=print) -> None:
        t0 = time.monotonic()
        on_progress("starting the inference service (loading Whisper and Piper once per node)…")
        ctx = multiprocessing.get_context("spawn")
        self._inference = ctx.Process(
            target=run_inference_service,
            args=(settings_for_child(self.settings), self.socket_path),
            name="dragoman-inference",
        )
        self._inference.start()
        # Fork the agents while the models load: both take seconds, neither needs the other.
        pool_start = asyncio.create_task(self.pool.start())
        on_progress("starting the media gateway (Janus)…")
        await self.gateway.start()
        on_progress(f"media gateway up (Janus pid {self.gateway.stats()['pid']})")
        await self._wait_inference()
        on_progress(f"inference service ready ({time.monotonic() - t0:.1f} s)")
        await pool_start
        on_progress(
            f"{self.pool.stats()['idle_agents']} agent processes pre-forked and waiting "
            f"({time.monotonic() - t0:.1f} s)"
        )

    async def _wait_inference(self, timeout_s: float = 300.0) -> None:
        client = InferenceClient(self.socket_path, timeout_s=5.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._inference is not None and not self._inference.is_alive():
                raise RuntimeError(
                    f"inference service exited with code {self._inference.exitcode}; see its log"
                )
            try:
                await client.ping()
                return
            except (InferenceError, OSError):
                await asyncio.sleep(0.2)
        raise RuntimeError("inference service did not become ready in time")

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        timeout = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        await self.pool.drain(timeout)
        await self.gateway.stop()
        if self._inference is not None and self._inference.is_alive():
            self._inference.terminate()
            await asyncio.to_thread(self._inference.join, 5.0)
            if self._inference.is_alive():
                self._inference.kill()
        self._tmpdir.cleanup()
