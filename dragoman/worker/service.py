"""A node's worker as the fleet sees it: registers the node, heartbeats, confirms and
releases call slots in the registry, and drains on shutdown without cutting a call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_fixed,
    wait_incrementing,
)

from dragoman.config import Settings
from dragoman.contract.calls import CallAnswer, CallRequest, InviteAnswer
from dragoman.contract.errors import NoAgentAvailable, RegistryUnavailable
from dragoman.fleet.control_link import ControlLink
from dragoman.fleet.node_state import NodeState
from dragoman.fleet.registry import NodeReport, Registry
from dragoman.pipeline.providers.catalog import PROVIDERS
from dragoman.worker import k8s_cost, metrics
from dragoman.worker.node import Node

log = logging.getLogger("dragoman.worker")

# Registering: a worker that is not in the registry takes no call, so it keeps trying (its
# readiness probe fails meanwhile). Releasing a slot: a slot must come back even if Redis
# blinks at that moment, so a few quick tries; past them its reservation expires by itself.
REGISTER_RETRY_S = 1.0
RELEASE_ATTEMPTS = 5
RELEASE_WAIT_S = 0.2  # then 0.4, 0.6, ...


class WorkerService:
    """A node as the fleet sees it: registers in the registry and heartbeats, takes calls
    handed over by the api (``start_call``, ``end_call``, ``invite``), confirms and releases
    their slots, and drains on ``stop`` without cutting a call. Under ``serve`` the api
    calls it in-process; a ``worker`` process serves it over HTTP (``worker.app``). It builds
    its ``Node`` and hears from it (``NodeEvents``) when a call ends or readiness changes."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.node = Node(settings, events=self)
        self.calls = self.node.calls
        self.pool = self.calls.pool
        self.gateway = self.node.gateway
        self.inference = self.node.inference
        self.address = (
            settings.worker_url or f"http://{settings.worker_host}:{settings.worker_port}"
        )
        self._heartbeat: asyncio.Task | None = None
        # In Kubernetes: this pod's deletion cost follows its calls (empty pods go first).
        self.deletion_cost = k8s_cost.from_settings(settings)
        self._stopping: asyncio.Task | None = None
        self._invites: dict[str, str] = {}  # host call id -> its room guest's reserved id
        self.ready = False

    @property
    def draining(self) -> bool:
        return self.pool.draining

    @property
    def state(self) -> NodeState:
        """DRAINING, READY, or NOT_READY while its media gateway or its inference service
        is restarting."""
        if self.draining:
            return NodeState.DRAINING
        if self.gateway.up and self._inference_up:
            return NodeState.READY
        return NodeState.NOT_READY

    @property
    def _inference_up(self) -> bool:
        return self.inference.up

    def readiness_changed(self) -> None:
        """``NodeEvents``: its media gateway or inference service went down or came back.
        Reported at once: the registry stops placing calls here before the next beat."""
        if self.ready:
            asyncio.ensure_future(self._heartbeat_once())

    async def _heartbeat_once(self) -> None:
        try:
            report = self.report()
            if await self.registry.heartbeat(report):
                log.warning(
                    "the registry had lost this node (restarted?): restored its %d calls",
                    len(report.calls),
                )
        except RegistryUnavailable as e:
            log.warning("heartbeat failed: %s", e)

    def report(self) -> NodeReport:
        stats = self.calls.stats()
        metrics.CALLS_ACTIVE.set(stats["active_calls"])
        metrics.IDLE_AGENTS.set(stats["idle_agents"])
        metrics.CAPACITY.set(stats["capacity"])
        metrics.DRAINING.set(1 if self.draining else 0)
        metrics.MEDIA_UP.set(1 if self.gateway.up else 0)
        metrics.INFERENCE_UP.set(1 if self._inference_up else 0)
        local_load = self.calls.local_calls
        metrics.LOCAL_CAPACITY.set(self.pool.local_capacity)
        metrics.LOCAL_CALLS_ACTIVE.set(local_load)
        by_provider = self.calls.calls_by_provider()
        for name in PROVIDERS:  # every provider, so an ended one reads 0, not its last value
            metrics.PROVIDER_CALLS_ACTIVE.labels(name).set(by_provider.get(name, 0))
        s = self.settings
        return NodeReport(
            node_id=s.node_id,
            address=self.address,
            capacity=s.max_calls,
            idle=stats["idle_agents"],
            state=self.state,
            local_capacity=self.pool.local_capacity,
            local_load=local_load,
            # A registry that lost its state takes the running calls back from these.
            calls=tuple(sorted(self.calls.call_ids())),
            local_calls=tuple(sorted(self.calls.local_call_ids())),
            holds=tuple(sorted(self.calls.holds())),
        )

    async def start(self, on_progress: Any = print) -> None:
        await self.node.start(on_progress=on_progress)

        def retrying(state: RetryCallState) -> None:
            e = state.outcome.exception() if state.outcome else None
            on_progress(f"registry unavailable ({e}); retrying…")

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RegistryUnavailable),
            wait=wait_fixed(REGISTER_RETRY_S),
            before_sleep=retrying,
        ):
            with attempt:
                await self.registry.register(self.report())
        self.ready = True
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        self.deletion_cost.start(lambda: self.pool.busy)
        on_progress(f"node {self.settings.node_id} registered at {self.address}")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            await self._heartbeat_once()

    async def start_call(self, req: CallRequest) -> CallAnswer:
        t0 = time.perf_counter()
        try:
            result = await self.calls.start_call(req)
        except Exception:
            await self._release(req.call_id)
            raise
        metrics.ANSWER_SECONDS.observe(time.perf_counter() - t0)
        try:
            if not await self.registry.confirm(req.call_id):
                log.warning("call %s answered after its reservation expired", req.call_id)
        except RegistryUnavailable as e:
            log.warning("could not confirm call %s: %s", req.call_id, e)
        return result

    async def invite(self, call_id: str, control_token: str, ttl_s: float) -> InviteAnswer:
        """Make a call a two-party room: a slot for the second person is reserved on this
        node now (both agents must share a node), for as long as the invitation lasts."""
        req = self.calls.invitable(call_id, control_token)
        stale = self._invites.pop(call_id, None)
        if stale is not None and stale not in self.calls.call_ids():
            await self._release(stale)  # a new link replaces an unused one: one slot held
        guest = uuid.uuid4().hex
        # The guest's agent runs the room's provider: a local one needs a local slot too.
        local = self.calls.uses_inference(req)
        if await self.registry.reserve(guest, [self.settings.node_id], ttl_s, local) is None:
            raise NoAgentAvailable(
                "This node has no free slot for a second person right now; try again.",
                self.settings.retry_after_s,
            )
        self._invites[call_id] = guest
        return InviteAnswer(
            guest_call_id=guest,
            host_call_id=call_id,
            language=req.source,
            provider=req.provider,
            node_id=self.settings.node_id,
        )

    async def end_call(self, call_id: str, reason: str = "remote_hangup") -> bool:
        return await self.calls.end_call(call_id, reason)

    async def call_ended(self, call_id: str, reason: str) -> None:
        """``NodeEvents``: a call's process is gone; its slot (and an unused invitation's)
        is released."""
        metrics.CALLS_ENDED.labels(reason).inc()
        await self._release(call_id)
        guest = self._invites.pop(call_id, None)
        if guest is not None and guest not in self.calls.call_ids():
            await self._release(guest)  # nobody will join a room whose host has left

    async def _release(self, call_id: str) -> None:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(RegistryUnavailable),
                stop=stop_after_attempt(RELEASE_ATTEMPTS),
                wait=wait_incrementing(RELEASE_WAIT_S, RELEASE_WAIT_S),
            ):
                with attempt:
                    await self.registry.release(call_id)
        except RetryError:
            log.error("could not release call %s; its reservation will expire", call_id)

    def attach_control(self, call_id: str, token: str) -> ControlLink:
        """A page's control channel for a call on this node (``LinkClosed`` if refused)."""
        return self.node.hub.attach(call_id, token)

    def end_calls_now(self) -> None:
        """A second Ctrl-C: the drain under way stops waiting and ends the running calls."""
        self.pool.force_stop = True

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Drain: DRAINING in the registry at once, let calls finish, then leave.

        Idempotent: a second call waits for the drain already under way.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain(drain_timeout_s))
        await asyncio.shield(self._stopping)

    async def _drain(self, drain_timeout_s: float | None) -> None:
        timeout = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self.pool.draining = True
        with contextlib.suppress(RegistryUnavailable):
            await self.registry.heartbeat(self.report())
        await self.node.stop(timeout)
        await self.deletion_cost.stop()
        if self._heartbeat:
            self._heartbeat.cancel()
        with contextlib.suppress(RegistryUnavailable):
            await self.registry.remove_node(self.settings.node_id)
