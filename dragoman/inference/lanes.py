"""The service decides the order of Whisper's work, not the arrival of requests.

A ``PriorityLane`` runs jobs on a fixed number of worker threads (the Whisper model's own
workers). What waits is kept in the lane, not in a thread pool's FIFO, so that:

- a ``final`` job (an utterance that ended: someone is waiting for its translation) starts
  before every queued ``partial`` one (a re-decode of audio still being spoken);
- a queued ``partial`` of a ``stream`` is dropped (``Superseded``) when a newer request of
  the same stream comes, a ``partial`` or the ``final``: its answer would be stale before it
  was sent. A ``final`` is never dropped.

Jobs are not pre-empted: a final waits at most for one running job to end. Every job's wait
is recorded by priority, with the queue's depth, for the service's ``/ping`` (and the
worker's metrics).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dragoman.inference import wire

T = TypeVar("T")

RANK = {"final": 0, "partial": 1}
WAIT_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Superseded(Exception):
    """A queued partial job dropped for a newer one of the same stream."""


def lane_size(cores: int, threads: int = 0, workers: int = 0) -> tuple[int, int]:
    """(workers, threads per worker) for a node with ``cores`` cores; a value > 0 given
    overrides that half. By default one thread per worker and a worker per core: a decode
    (most of a request's time once the encoder window is short) is a chain of small matrix
    products that a second thread hardly speeds up, while a second request in parallel
    doubles what the node serves; a final's transcribe and translate then run side by side."""
    cores = max(1, cores)
    if threads > 0 and workers > 0:
        return workers, threads
    if threads > 0:
        return max(1, cores // threads), threads
    if workers > 0:
        return workers, max(1, cores // workers)
    return cores, 1


@dataclass
class _Waits:
    count: int = 0
    sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(WAIT_BUCKETS_MS))

    def add(self, ms: float) -> None:
        self.count += 1
        self.sum_ms += ms
        for i, bound in enumerate(WAIT_BUCKETS_MS):
            if ms <= bound:
                self.buckets[i] += 1

    def snapshot(self) -> dict[str, Any]:
        """Cumulative, as a Prometheus histogram: jobs that waited at most each bound."""
        return {
            "count": self.count,
            "sum_ms": round(self.sum_ms, 1),
            "le_ms": {str(b): n for b, n in zip(WAIT_BUCKETS_MS, self.buckets, strict=True)},
        }


@dataclass(eq=False)
class _Job:
    rank: int
    seq: int
    priority: str
    stream: str | None
    call: Callable[[], Any]
    future: asyncio.Future
    queued_at: float
    dropped: bool = False

    def __lt__(self, other: _Job) -> bool:
        return (self.rank, self.seq) < (other.rank, other.seq)


class PriorityLane:
    def __init__(self, workers: int, threads: int = 1, name: str = "stt") -> None:
        self.workers = max(1, workers)
        self.threads = threads  # what each worker's model call uses (reported only)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=name)
        self._queue: list[_Job] = []
        self._partials: dict[str, _Job] = {}  # a stream's queued partial
        self._running = 0
        self._seq = itertools.count()
        self._done = dict.fromkeys(wire.PRIORITIES, 0)
        self._waits = {p: _Waits() for p in wire.PRIORITIES}
        self.superseded = 0

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        priority: str = "final",
        stream: str | None = None,
        **kwargs: Any,
    ) -> tuple[T, float]:
        """``fn(*args, **kwargs)`` on a worker when its turn comes: (its result, the ms it
        waited). ``Superseded`` if a newer request of ``stream`` replaced it in the queue."""
        if priority not in RANK:
            raise ValueError(f"priority must be one of {wire.PRIORITIES}, not {priority!r}")
        job = _Job(
            rank=RANK[priority],
            seq=next(self._seq),
            priority=priority,
            stream=stream or None,
            call=functools.partial(fn, *args, **kwargs),
            future=asyncio.get_running_loop().create_future(),
            queued_at=time.perf_counter(),
        )
        if job.stream is not None:
            older = self._partials.pop(job.stream, None)
            if older is not None:  # still queued: a started job leaves this map
                older.dropped = True
                self.superseded += 1
                if not older.future.done():
                    older.future.set_exception(Superseded(job.stream))
            if priority == "partial":
                self._partials[job.stream] = job
        heapq.heappush(self._queue, job)
        self._dispatch()
        try:
            return await job.future
        except asyncio.CancelledError:
            # Its caller is gone (the service stopping): a queued job is skipped; a running
            # one ends by itself and frees its worker then.
            job.dropped = True
            if job.stream is not None and self._partials.get(job.stream) is job:
                del self._partials[job.stream]
            raise

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running < self.workers and self._queue:
            job = heapq.heappop(self._queue)
            if job.dropped or job.future.done():
                continue
            if job.stream is not None and self._partials.get(job.stream) is job:
                del self._partials[job.stream]
            waited = (time.perf_counter() - job.queued_at) * 1000
            self._waits[job.priority].add(waited)
            self._running += 1
            running = loop.run_in_executor(self._pool, job.call)
            running.add_done_callback(functools.partial(self._finished, job, waited))

    def _finished(self, job: _Job, waited: float, running: asyncio.Future) -> None:
        self._running -= 1
        self._done[job.priority] += 1
        error = None if running.cancelled() else running.exception()  # always retrieved
        if not job.future.done():
            if running.cancelled():
                job.future.cancel()
            elif error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result((running.result(), waited))
        self._dispatch()

    def stats(self) -> dict[str, Any]:
        queued = dict.fromkeys(wire.PRIORITIES, 0)
        for job in self._queue:
            if not job.dropped and not job.future.done():
                queued[job.priority] += 1
        return {
            "workers": self.workers,
            "threads": self.threads,
            "running": self._running,
            "queued": queued,
            "done": dict(self._done),
            "superseded": self.superseded,
            "wait_ms": {p: w.snapshot() for p, w in self._waits.items()},
        }

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
