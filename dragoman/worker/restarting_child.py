"""Keep one child process of the worker running: the media gateway (Janus) and the
inference service are each watched, reported down the moment they are lost, killed,
started again with back-off, and reported up once they answer.

What is specific to a child (how to start it and know it answers, how to tell it is gone,
how to kill it) is its subclass's; the loop, its state and its policy are here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("dragoman.worker")


@dataclass(frozen=True)
class Backoff:
    """Wait before the next start: doubling per failed start in a row, up to ``cap_s``."""

    base_s: float
    cap_s: float

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.base_s * 2**failures)


class RestartingChild(ABC):
    """A child restarted whenever ``_watch`` returns (with the reason it is gone).

    ``on_down(reason)`` is called before the lost child is killed (the worker marks the node
    not ready), ``on_up()`` once a new one answers (both given by its owner, ``worker.node``)."""

    what: str  # as the log names it
    backoff: Backoff

    def __init__(
        self,
        on_down: Callable[[str], None] = lambda _reason: None,
        on_up: Callable[[], None] = lambda: None,
    ) -> None:
        self.on_down = on_down
        self.on_up = on_up
        self.restarts = 0
        self.last_down_reason: str | None = None
        self._up = False
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._up

    @abstractmethod
    async def _start(self) -> None:
        """Start the child; return once it answers, raise if it does not."""

    @abstractmethod
    async def _watch(self) -> str:
        """Return why the child is gone (it exited, or stopped answering its probe)."""

    @abstractmethod
    async def _terminate(self) -> None:
        """Kill what is left of the child (also a stopped one); gently when stopping."""

    def _mark_down(self, reason: str) -> None:
        self._up = False
        self.on_down(reason)

    def _mark_up(self) -> None:
        self._up = True
        self.on_up()

    def _supervise(self) -> None:
        """The first child is up: watch it from now on."""
        self._supervisor = asyncio.create_task(self._restart_loop(), name=f"supervise {self.what}")

    async def stop(self) -> None:
        """No more restarts; then the child is terminated (gently: ``_stopping`` is set)."""
        self._stopping = True
        self._up = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()

    async def _restart_loop(self) -> None:
        failures = 0
        while not self._stopping:
            reason = await self._watch()
            if self._stopping:
                return
            self.restarts += 1
            self.last_down_reason = reason
            log.error("%s down (%s); restarting it", self.what, reason)
            self._mark_down(reason)
            await self._terminate()
            while not self._stopping:
                try:
                    await self._start()
                    failures = 0
                    break
                except Exception as e:
                    failures += 1
                    log.error("%s restart failed: %s", self.what, e)
                    await self._terminate()
                    await asyncio.sleep(self.backoff.delay(failures))
            if not self._stopping:
                self._mark_up()
