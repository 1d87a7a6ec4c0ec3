"""One node's worker: the node-local inference service, the media gateway (Janus) and the
pre-forked agent pool."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

from dragoman.config import Settings
from dragoman.worker.control import ControlHub
from dragoman.worker.gateway import MediaGateway
from dragoman.worker.inference_service import InferenceService
from dragoman.worker.pool import AgentPool

log = logging.getLogger("dragoman.worker")


class Node:
    """One node's parts, started and stopped together: the inference service, the media
    gateway (Janus), the control hub and the agent pool. Each part supervises itself (a
    ``SupervisedChild`` restarts Janus or the inference service; the pool supervises its
    agents); this only wires them and orders their start and stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tmpdir = tempfile.TemporaryDirectory(prefix="dragoman-")
        runtime = Path(self._tmpdir.name)
        if settings.inference_socket is not None:
            self.socket_path = str(settings.inference_socket)
        else:
            self.socket_path = str(runtime / "inference.sock")
        self.inference = InferenceService(settings, self.socket_path)
        self.gateway = MediaGateway(settings, runtime / "janus")
        self.hub = ControlHub()
        self.pool = AgentPool(
            settings, self.socket_path, self.gateway, self.hub, inference=self.inference
        )

    async def start(self, on_progress=print) -> None:
        t0 = time.monotonic()
        on_progress("starting the inference service (loading Whisper and Piper once per node)…")
        self.inference.launch()
        # Fork the agents while the models load: both take seconds, neither needs the other.
        pool_start = asyncio.create_task(self.pool.start())
        on_progress("starting the media gateway (Janus)…")
        await self.gateway.start()
        on_progress(f"media gateway up (Janus pid {self.gateway.stats()['pid']})")
        await self.inference.wait_ready()
        self.inference.supervise()
        on_progress(f"inference service ready ({time.monotonic() - t0:.1f} s)")
        await pool_start
        on_progress(
            f"{self.pool.stats()['idle_agents']} agent processes pre-forked and waiting "
            f"({time.monotonic() - t0:.1f} s)"
        )

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        timeout = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        await self.pool.drain(timeout)
        await self.gateway.stop()
        await self.inference.stop()
        self._tmpdir.cleanup()
