"""The one restart loop behind the media gateway and the inference service, with a stand-in
child: down is reported before the kill, failed starts back off, stop ends the restarts.
(The real children are killed and stopped in test_media_plane.py and test_supervision.py.)"""

from __future__ import annotations

import asyncio

from dragoman.worker.agents.pool import FORK_BACKOFF
from dragoman.worker.inference_service import RESTART_BACKOFF as INFERENCE_BACKOFF
from dragoman.worker.media.gateway import RESTART_BACKOFF as JANUS_BACKOFF
from dragoman.worker.restarting_child import Backoff, RestartingChild


def test_backoff_doubles_per_failure_up_to_its_cap() -> None:
    assert [JANUS_BACKOFF.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert [INFERENCE_BACKOFF.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert [FORK_BACKOFF.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]


class Recorded(Backoff):
    """Says what it would wait, and waits nothing."""

    def delay(self, failures: int) -> float:
        self.waits.append(super().delay(failures))  # type: ignore[attr-defined]
        return 0.0


QUICK = Backoff(0.001, 0.01)


class Child(RestartingChild):
    """Dies when told; its next ``fail_starts`` starts fail."""

    what = "test child"

    def __init__(self, backoff: Backoff = QUICK) -> None:
        super().__init__()
        self.backoff = backoff
        self.events: list[str] = []
        self.gone: asyncio.Queue[str] = asyncio.Queue()
        self.fail_starts = 0
        self.on_down = lambda reason: self.events.append(f"down: {reason}")
        self.on_up = lambda: self.events.append("up")

    async def _start(self) -> None:
        self.events.append("start")
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("would not start")

    async def _watch(self) -> str:
        return await self.gone.get()

    async def _terminate(self) -> None:
        self.events.append("terminate")

    def begin(self) -> None:
        self._mark_up()
        self._supervise()
        self.events.clear()


async def settle(child: Child, last: str) -> None:
    async with asyncio.timeout(5):
        while not child.events or child.events[-1] != last:
            await asyncio.sleep(0.001)


async def test_a_lost_child_is_reported_down_killed_restarted_and_reported_up() -> None:
    child = Child()
    child.begin()
    child.gone.put_nowait("exited with code -9")
    await settle(child, "up")
    assert child.events == ["down: exited with code -9", "terminate", "start", "up"]
    assert child.restarts == 1 and child.last_down_reason == "exited with code -9"
    assert child.up
    child.events.clear()
    child.gone.put_nowait("stopped answering")
    await settle(child, "up")
    assert child.restarts == 2 and child.last_down_reason == "stopped answering"
    await child.stop()
    assert not child.up


async def test_down_is_seen_before_the_kill_and_until_a_start_answers() -> None:
    child = Child()
    child.on_down = lambda _reason: child.events.append(f"up={child.up}")
    child.begin()
    child.fail_starts = 1
    child.gone.put_nowait("gone")
    await settle(child, "terminate")
    assert child.events[0] == "up=False" and not child.up
    await child.stop()


async def test_failed_starts_are_retried_after_a_growing_wait() -> None:
    backoff = Recorded(1.0, 5.0)
    object.__setattr__(backoff, "waits", waits := [])
    child = Child(backoff)
    child.begin()
    child.fail_starts = 3
    child.gone.put_nowait("gone")
    await settle(child, "up")
    failed = ["start", "terminate"] * 3
    assert child.events == ["down: gone", "terminate", *failed, "start", "up"]
    assert waits == [2.0, 4.0, 5.0]
    assert child.restarts == 1  # one loss, however many starts it took
    await child.stop()


async def test_stop_ends_the_restarts() -> None:
    child = Child(Backoff(0.05, 0.05))
    child.begin()
    child.fail_starts = 1000
    child.gone.put_nowait("gone")
    await settle(child, "terminate")
    await child.stop()
    starts = child.events.count("start")
    await asyncio.sleep(0.2)
    assert child.events.count("start") == starts and "up" not in child.events
