"""Run a FastAPI app under uvicorn with the shutdown semantics our processes need.

SIGTERM or Ctrl-C starts a graceful shutdown (the app's lifespan drains calls) and the
process then exits 0 — uvicorn would re-raise the signal and die by it instead. A second
SIGTERM is not a crash (the drain just continues); a second Ctrl-C calls ``on_force``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_force: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_force = on_force
        self._signals = 0

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        self.should_exit = True
        if self._signals > 1 and sig == signal.SIGINT:
            self._on_force()


def run_app(app: Any, host: str, port: int, on_force: Callable[[], None] = lambda: None) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    _DrainingServer(config, on_force).run()
