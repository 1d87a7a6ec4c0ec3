"""Run a FastAPI app under uvicorn with the shutdown semantics our processes need.

On SIGTERM or Ctrl-C the app's ``drain`` runs first, while HTTP keeps serving (readiness
reports DRAINING, new calls get 503, a hang-up through any api replica still reaches the
node); only when it finishes does uvicorn shut down, and the process exits 0 (uvicorn alone
would stop listening at once and then die by re-raising the signal). A second SIGTERM is
not a crash: the drain just continues. A second Ctrl-C calls ``on_force``.

``internal`` adds a second listening address to the same server (the api's internal port:
health, metrics, the autoscale view); the app tells the two apart by the port a request
came in on (``api.listeners``). ``tls`` (certificate, key) puts HTTPS on the public port
only: probes, Prometheus and KEDA keep reading the internal one in plain HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("dragoman")


class _DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        drain: Callable[[], Awaitable[None]] | None,
        on_force: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._on_force = on_force
        self._signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None
        self.plain: list[socket.socket] = []  # served without the config's TLS

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        tls_sockets = [s for s in sockets or [] if s not in self.plain]
        await super().startup(tls_sockets if sockets is not None else None)
        if self.should_exit:
            return
        config, loop = self.config, asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:  # as uvicorn's startup makes them
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        for sock in self.plain:  # closed with the others at shutdown (self.servers)
            self.servers.append(
                await loop.create_server(protocol, sock=sock, ssl=None, backlog=config.backlog)
            )

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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
        if self._signals > 1:
            if sig == signal.SIGINT:
                self._on_force()
            return
        if self._drain is None or self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        async def drain_then_exit() -> None:
            try:
                await self._drain()  # type: ignore[misc]
            except Exception:
                log.exception("drain failed")
            finally:
                self.should_exit = True

        self._drain_task = asyncio.ensure_future(drain_then_exit())


def run_app(
    app: Any,
    host: str,
    port: int,
    drain: Callable[[], Awaitable[None]] | None = None,
    on_force: Callable[[], None] = lambda: None,
    internal: tuple[str, int] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # The process's logging as dragoman.logs set it up (format, quiet libraries):
        # uvicorn's own config would replace it.
        log_config=None,
        log_level=None,
        lifespan="on",
        # Control messages are ~100-byte JSON: compressing each costs CPU and saves nothing.
        ws_per_message_deflate=False,
        # ... and never large: refuse a huge frame before it is buffered (uvicorn's default
        # accepts 16 MB). Control messages over 4 KB are refused with a reason anyway.
        ws_max_size=64 * 1024,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    sockets = None
    plain: list[socket.socket] = []
    if internal is not None and internal[1] != port:
        # Bound here, before serving: a port already taken fails the start, not a probe later.
        extra = uvicorn.Config(
            app, host=internal[0], port=internal[1], log_config=None, log_level=None
        )
        sockets = [config.bind_socket(), extra.bind_socket()]
        plain = sockets[1:]
        for sock in sockets:
            sock.set_inheritable(False)  # bound before the node's children start: not theirs
    server = _DrainingServer(config, drain, on_force)
    server.plain = plain
    server.run(sockets=sockets)
