"""The control-plane FastAPI app (routes, errors, the static page)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dragoman import __version__
from dragoman.api.calls import router
from dragoman.api.errors import install_error_handlers
from dragoman.config import Settings
from dragoman.worker.node import Node

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(
    settings: Settings,
    node: Node,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The app for ``dragoman serve``: calls go to this node's agent pool."""

    @asynccontextmanager
    async def default_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            print("draining calls…", flush=True)
            await node.stop()

    app = FastAPI(title="dragoman", version=__version__, lifespan=lifespan or default_lifespan)
    app.state.settings = settings
    app.state.pool = node.pool
    app.state.node = node
    install_error_handlers(app)
    app.include_router(router)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
