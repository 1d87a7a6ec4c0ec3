"""The control-plane FastAPI app (routes, errors, the static page)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dragoman import __version__
from dragoman.api import openapi
from dragoman.api.calls import router
from dragoman.api.control import router as control_router
from dragoman.api.listeners import SplitListeners
from dragoman.api.rooms import room_key
from dragoman.api.rooms import router as rooms_router
from dragoman.config import Settings
from dragoman.fleet.autoscale import ArrivalMeter
from dragoman.fleet.dispatcher import Dispatcher
from dragoman.http.errors import install_error_handlers

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(
    settings: Settings,
    dispatcher: Dispatcher,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    local_calls: Any = None,
    local_metrics: Callable[[], object] | None = None,
) -> FastAPI:
    """The control plane. ``local_calls`` (the worker's ``NodeCalls``) is set when a worker
    shares the process (serve), with ``local_metrics``: what refreshes that worker's gauges
    before ``/metrics`` answers (its own endpoint, which serve does not run, would)."""
    app = FastAPI(title="dragoman", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.dispatcher = dispatcher
    app.state.local_calls = local_calls
    app.state.local_metrics = local_metrics
    app.state.arrival_meter = ArrivalMeter()
    app.state.local_arrival_meter = ArrivalMeter()  # those of them for the local pipeline
    app.state.room_key = room_key(settings.internal_token)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(control_router)
    app.include_router(rooms_router)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    split = settings.internal_port != settings.port  # equal: one listener serves everything
    openapi.install(app, split)
    if split:
        app.add_middleware(SplitListeners, internal_port=settings.internal_port, fastapi_app=app)
    return app
