"""Keep one child process of the worker running: the media gateway (Janus) and the
inference service are each watched, reported down the moment they are lost, killed,
started again with back-off, and reported up once they answer.

What is specific to a child (how to start it and know it answers, how to tell it is gone,
how to kill it) is the owner's; the loop and its policy are here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("dragoman.worker")


@dataclass(frozen=True)
class Backoff:
    """Wait before the next start: doubling per failed start in a row, up to ``cap_s``."""

    base_s: float
    cap_s: float

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.base_s * 2**failures)


class ChildSupervisor:
    """Restarts one child whenever ``watch`` returns (with the reason it is gone).

    ``start`` starts the child and returns once it answers, raising if it does not;
    ``terminate`` kills what is left of it (also a stopped one). ``on_down(reason)`` runs
    before the child is killed, ``on_up()`` once a new one answers."""

    def __init__(
        self,
        what: str,
        start: Callable[[], Awaitable[None]],
        watch: Callable[[], Awaitable[str]],
        terminate: Callable[[], Awaitable[None]],
        backoff: Backoff,
        on_down: Callable[[str], None],
        on_up: Callable[[], None],
    ) -> None:
        self.what = what
        self._start = start
        self._watch = watch
        self._terminate = terminate
        self.backoff = backoff
        self._on_down = on_down
        self._on_up = on_up
        self.restarts = 0
        self.last_down_reason: str | None = None
        self.stopping = False
        self._task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """The first child is up (its owner started it): watch it from now on."""
        self._task = asyncio.create_task(self._run(), name=f"supervise {self.what}")

    async def stop(self) -> None:
        """No more restarts (the owner then terminates the child itself)."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while not self.stopping:
            reason = await self._watch()
            if self.stopping:
                return
            self.restarts += 1
            self.last_down_reason = reason
            log.error("%s down (%s); restarting it", self.what, reason)
            self._on_down(reason)
            await self._terminate()
            while not self.stopping:
                try:
                    await self._start()
                    failures = 0
                    break
                except Exception as e:
                    failures += 1
                    log.error("%s restart failed: %s", self.what, e)
                    await self._terminate()
                    await asyncio.sleep(self.backoff.delay(failures))
            if not self.stopping:
                self._on_up()
