"""Runs tiny blocking calls inline instead of hopping to a thread.

Pipecat's VAD analyses every audio chunk (32 ms) in a one-thread executor. The analysis
takes tens of microseconds, while the hop (submit, wake a thread, hand the GIL over and
back, wake the loop) costs several times that: profiling a call process showed a quarter
of its CPU in ``ThreadPoolExecutor.submit`` and thread wake-ups. An agent process serves
exactly one call, so running them on its own loop blocks no one else. Name resolution,
which can take seconds, still goes to a real thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

SLOW = {socket.getaddrinfo, socket.getnameinfo}


class InlineExecutor(ThreadPoolExecutor):
    """asyncio accepts only a ThreadPoolExecutor as the default executor; this one starts
    threads only for name resolution."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self._dns: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if fn in SLOW:
            if self._dns is None:
                self._dns = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dns")
            return self._dns.submit(fn, *args, **kwargs)
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # delivered to the awaiting coroutine, as a thread would
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._dns is not None:  # (not "_threads": the base class owns that name)
            self._dns.shutdown(wait=wait, cancel_futures=cancel_futures)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
