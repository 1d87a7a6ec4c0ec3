"""The node's inference service process (Whisper + Piper, shared by every agent), started
and supervised by the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from dragoman.config import Settings, settings_for_child
from dragoman.inference.client import InferenceClient, InferenceError
from dragoman.inference.server import run_inference_service
from dragoman.worker import metrics
from dragoman.worker.restarting_child import Backoff, RestartingChild

log = logging.getLogger("dragoman.worker")

INFERENCE_START_TIMEOUT_S = 300.0  # loading Whisper and Piper; minutes on a cold disk
RESTART_BACKOFF = Backoff(base_s=0.5, cap_s=30.0)


class InferenceService(RestartingChild):
    """The node's inference process, supervised like the media gateway: its exit is seen at
    once (its sentinel), a hang by a ping every ``inference_probe_interval_s``. Either way it
    reports down (the worker marks the node NOT_READY), is killed, started again and reports
    up once it answers. Agents reach it by socket path (their client connects again after
    a restart), so they need no telling; a request that was in flight fails and the call's
    page gets an error message."""

    what = "inference service"
    backoff = RESTART_BACKOFF

    def __init__(
        self,
        settings: Settings,
        socket_path: str,
        on_down: Callable[[str], None],
        on_up: Callable[[], None],
    ) -> None:
        super().__init__(on_down, on_up)
        self.settings = settings
        self.socket_path = socket_path
        self._proc: BaseProcess | None = None
        self.stt: dict[str, Any] | None = None  # its last ping's queue stats (lanes.stats)

    def stats(self) -> dict[str, Any]:
        return {
            "up": self._up,
            "pid": self._proc.pid if self._proc is not None else None,
            "restarts": self.restarts,
            "last_down_reason": self.last_down_reason,
            "stt": self.stt,
        }

    def launch(self) -> None:
        # spawn, not the agents' forkserver: a fresh interpreter that loads the models once.
        ctx = multiprocessing.get_context("spawn")
        self._proc = ctx.Process(
            target=run_inference_service,
            args=(settings_for_child(self.settings), self.socket_path),
            name="dragoman-inference",
        )
        self._proc.start()

    async def wait_ready(self, timeout_s: float = INFERENCE_START_TIMEOUT_S) -> None:
        client = InferenceClient(self.socket_path, timeout_s=5.0)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                proc = self._proc
                if proc is not None and not proc.is_alive():
                    raise RuntimeError(
                        f"inference service exited with code {proc.exitcode}; see its log"
                    )
                try:
                    await client.ping()
                    return
                except (InferenceError, OSError):
                    await asyncio.sleep(0.2)
            raise RuntimeError("inference service did not become ready in time")
        finally:
            await client.aclose()

    def supervise(self) -> None:
        """It is up (``wait_ready`` returned): watch it from now on."""
        self._up = True
        metrics.INFERENCE_UP.set(1)
        self._supervise()

    async def _start(self) -> None:
        self.launch()
        await self.wait_ready()

    def _mark_down(self, reason: str) -> None:
        metrics.INFERENCE_UP.set(0)
        metrics.INFERENCE_RESTARTS.inc()
        super()._mark_down(reason)

    def _mark_up(self) -> None:
        metrics.INFERENCE_UP.set(1)
        log.warning("inference service back (pid %s)", self.stats()["pid"])
        super()._mark_up()

    async def _watch(self) -> str:
        """Returns why the service is gone: it exited or stopped answering its ping."""
        proc = self._proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        # The sentinel is a pipe the child holds open: readable the moment it exits.
        loop.add_reader(proc.sentinel, on_exit)
        timeout = self.settings.inference_probe_timeout_s
        client = InferenceClient(self.socket_path, timeout_s=timeout)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(exited), self.settings.inference_probe_interval_s
                    )
                if exited.done() or not proc.is_alive():
                    return await self._exit_reason(proc)
                try:
                    reply = await asyncio.wait_for(client.ping(), timeout)
                    self._record(reply.get("stt"))
                except (InferenceError, TimeoutError) as e:
                    if not proc.is_alive():
                        return await self._exit_reason(proc)
                    return f"inference service stopped answering ({str(e) or type(e).__name__})"
        finally:
            loop.remove_reader(proc.sentinel)
            exited.cancel()
            await client.aclose()

    def _record(self, stt: Any) -> None:
        if isinstance(stt, dict):
            self.stt = stt
            metrics.record_stt(stt)

    @staticmethod
    async def _exit_reason(proc: BaseProcess) -> str:
        # Its sentinel closes a moment before the kernel has its exit status.
        await asyncio.to_thread(proc.join, 1.0)
        return f"inference service exited with code {proc.exitcode}"

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive() and self._stopping:
            proc.terminate()
            await asyncio.to_thread(proc.join, 5.0)
        if proc.is_alive():
            proc.kill()  # also ends a stopped (SIGSTOP) one, which SIGTERM would not
        await asyncio.to_thread(proc.join, 5.0)
        with contextlib.suppress(ValueError):
            proc.close()
        self._proc = None
