"""The forkserver the node's agents are forked from: what it preloads, and how a dead or
stuck one is noticed and replaced.

Idle agent processes are forked ahead of demand from a forkserver that already imported
everything a call needs, so a fresh agent is up in milliseconds. Agents are only its
children, not its dependants: when it dies their calls go on, and the next fork starts a
new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import signal

from dragoman import tracing
from dragoman.config import Settings
from dragoman.pipeline.providers.catalog import PROVIDERS, ProviderSpec, unavailable_reason
from dragoman.worker import metrics

log = logging.getLogger("dragoman.worker")

AGENT_MODULE = "dragoman.agent.process"
FREEZE_MODULE = "dragoman.agent.frozen"  # imported after AGENT_MODULE: see its docstring
SHARED_VAD_MODULE = "dragoman.agent.shared_vad"
SHARED_TURN_MODULE = "dragoman.agent.shared_turn"


def runnable_providers(settings: Settings) -> list[ProviderSpec]:
    """The node's default provider and every other one it has the keys for."""
    return [
        spec
        for spec in PROVIDERS.values()
        if spec.name == settings.provider or unavailable_reason(spec, settings) is None
    ]


def forkserver_preload(settings: Settings) -> list[str]:
    """What the forkserver imports once, so a fresh agent forks in milliseconds instead of
    importing SDKs (or loading the VAD) on the core its node's calls run on: the agent
    module, the modules of the providers this node can run, the shared VAD if one of them
    uses it (and Smart Turn's model with it, where enabled), and last the module that
    freezes all of it out of the GC's reach."""
    specs = runnable_providers(settings)
    providers = sorted({spec.module for spec in specs})
    vad = [SHARED_VAD_MODULE] if any(spec.uses_vad for spec in specs) else []
    turn = [SHARED_TURN_MODULE] if vad and settings.smart_turn else []
    # With tracing on, each agent exports its call's spans: the SDK is imported once here.
    otel = list(tracing.SDK_MODULES) if tracing.enabled() else []
    return [AGENT_MODULE, *providers, *vad, *turn, *otel, FREEZE_MODULE]


def forkserver_pid() -> int | None:
    return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)


def reset_dead_forkserver() -> bool:
    """True if the forkserver had died: its state is cleared so the next fork (or
    ``ensure_running``) starts a new one. CPython keeps it in private attributes of
    ``multiprocessing.forkserver._forkserver`` (3.11: address, alive fd, pid) and only
    notices a dead one by ``waitpid`` in ``ensure_running``, which fails for good if
    anyone else reaped it first; clearing it here makes recovery certain."""
    fs = multiprocessing.forkserver._forkserver
    lock = getattr(fs, "_lock", None)
    if lock is None or not hasattr(fs, "_forkserver_pid"):
        return False
    if not lock.acquire(timeout=0.1):  # a fork in progress holds it; look again next tick
        return False
    try:
        pid = fs._forkserver_pid
        if pid is None:
            return False
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid  # reaped elsewhere: gone all the same
        if not done:
            return False
        with contextlib.suppress(OSError, TypeError):
            os.close(fs._forkserver_alive_fd)
        address = fs._forkserver_address
        if isinstance(address, str) and not multiprocessing.util.is_abstract_socket_namespace(
            address
        ):
            with contextlib.suppress(OSError):
                os.unlink(address)
        fs._forkserver_address = fs._forkserver_alive_fd = fs._forkserver_pid = None
        return True
    finally:
        lock.release()


class Forkserver:
    """The node's forkserver as the pool sees it: when it became warm, its restarts."""

    def __init__(self) -> None:
        # When it first forked since it (re)started (its preload done); None: not yet.
        self.warm_since: float | None = None
        self.restarts = 0

    def forked(self, at: float) -> None:
        if self.warm_since is None:
            self.warm_since = at

    def check(self) -> bool:
        """True if the forkserver had died (its state is cleared: the next fork, or
        ``restart``, starts a new one)."""
        if not reset_dead_forkserver():
            return False
        self.restarts += 1
        metrics.FORKSERVER_RESTARTS.inc()
        self.warm_since = None
        log.error("the agents' forkserver died; starting a new one (running calls go on)")
        return True

    async def restart(self) -> None:
        """Start it now, so its preload is done before the next call needs a fork."""
        try:
            await asyncio.to_thread(multiprocessing.forkserver.ensure_running)
        except Exception:
            log.exception("could not start a new forkserver (the next fork retries)")

    def kill(self, why: str) -> None:
        """A forkserver that keeps forks waiting: kill it (its children, the agents, live
        on); the waiting forks fail and the next check replaces it."""
        pid = forkserver_pid()
        if pid is None:
            return
        log.error("the agents' forkserver %s is stuck (%s); killing it", pid, why)
        self.warm_since = None  # no second verdict while it is being replaced
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
