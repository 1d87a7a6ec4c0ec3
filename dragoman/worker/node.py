"""One node's worker: the node-local inference service, the media gateway (Janus), the
control hub and the node's calls (which own the pre-forked agent pool)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Protocol

from dragoman.config import Settings
from dragoman.worker import metrics
from dragoman.worker.calls.control import ControlHub
from dragoman.worker.calls.node_calls import NodeCalls
from dragoman.worker.inference_service import InferenceService
from dragoman.worker.media.gateway import MediaGateway

log = logging.getLogger("dragoman.worker")


class NodeEvents(Protocol):
    """What a node tells the fleet side of its worker (``worker.service.WorkerService``)."""

    async def call_ended(self, call_id: str, reason: str) -> None:
        """A call's process is gone, whatever ended it: its slot may be released."""

    def readiness_changed(self) -> None:
        """The media gateway or the inference service went down or came back up."""


class Node:
    """One node's parts, started and stopped together: the inference service, the media
    gateway (Janus), the control hub and the calls (``NodeCalls``, which owns the agent
    pool). Each part supervises itself (a ``RestartingChild`` restarts Janus or the
    inference service; the pool supervises its agents); this only wires them, tells
    ``events`` what the fleet must know, and orders their start and stop."""

    def __init__(self, settings: Settings, events: NodeEvents) -> None:
        self.settings = settings
        self._tmpdir = tempfile.TemporaryDirectory(prefix="dragoman-")
        runtime = Path(self._tmpdir.name)
        if settings.inference_socket is not None:
            self.socket_path = str(settings.inference_socket)
        else:
            self.socket_path = str(runtime / "inference.sock")
        self.events = events
        # Its calls go on while inference restarts (a sentence in flight fails with an error
        # on the page); the node is only reported not ready meanwhile.
        self.inference = InferenceService(
            settings,
            self.socket_path,
            on_down=lambda _reason: events.readiness_changed(),
            on_up=events.readiness_changed,
        )
        self.gateway = MediaGateway(
            settings, runtime / "janus", on_down=self._media_down, on_up=self._media_up
        )
        self.hub = ControlHub()
        self.calls = NodeCalls(
            settings,
            self.socket_path,
            self.gateway,
            self.hub,
            self.inference,
            on_call_ended=events.call_ended,
        )
        self.pool = self.calls.pool

    def _media_down(self, reason: str) -> None:
        metrics.MEDIA_RESTARTS.inc()
        self.calls.media_lost()
        self.events.readiness_changed()

    def _media_up(self) -> None:
        self.calls.media_restored()
        self.events.readiness_changed()

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
