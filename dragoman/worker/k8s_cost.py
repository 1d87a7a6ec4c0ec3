"""Steer Kubernetes scale-downs to empty workers: the pod-deletion cost.

When the HPA lowers the worker Deployment's replicas, its ReplicaSet removes the pods with
the lowest ``controller.kubernetes.io/pod-deletion-cost`` first (after pods that are not
ready). Each worker keeps that annotation on its own pod at its number of calls, so an empty
worker goes before one carrying calls — the ranking packs calls so that workers do empty —
and a worker with calls is only chosen when no empty one is left (it then drains them).

The annotation is patched through the API server with the pod's own service-account token
(``deploy/k8s/worker.yaml``: RBAC allows ``patch`` on pods, and an admission policy lets the
worker change nothing but this annotation on its own pod). Kubernetes asks not to update it
too often, so a change is written at once only when the pod becomes empty or stops being
empty; other changes wait ``pod_deletion_cost_interval_s``. Outside Kubernetes (no service
host, token or pod name) this is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("dragoman.worker")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PATCH_TIMEOUT_S = 3.0
POLL_S = 0.5


@dataclass(frozen=True)
class PodRef:
    api_url: str  # the API server, e.g. https://10.0.0.1:443
    namespace: str
    name: str
    token_path: Path  # re-read on every request: bound tokens are rotated by the kubelet
    ca_path: Path | None  # the cluster CA; None: the system's trust store

    @property
    def url(self) -> str:
        return f"{self.api_url}/api/v1/namespaces/{self.namespace}/pods/{self.name}"


def in_cluster(
    settings: Any, env: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT
) -> PodRef | None:
    """This worker's pod, or None when it is not a Kubernetes pod that may set the cost."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    name = settings.pod_name
    if not settings.pod_deletion_cost or not host or not name:
        return None
    if not (sa_dir / "token").is_file():
        log.warning(
            "pod-deletion cost: no service-account token in %s (automountServiceAccountToken?)",
            sa_dir,
        )
        return None
    namespace = settings.pod_namespace
    if not namespace:
        ns_file = sa_dir / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else ""
    if not namespace:
        return None
    host = f"[{host}]" if ":" in host else host  # an IPv6 service address
    ca = sa_dir / "ca.crt"
    return PodRef(f"https://{host}:{port}", namespace, name, sa_dir / "token", ca)


class DeletionCost:
    """Keeps the pod's deletion cost at ``calls()``: ``run`` polls it; ``update`` writes."""

    def __init__(
        self,
        pod: PodRef | None,
        interval_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pod = pod
        self.interval_s = interval_s
        self._client = client
        self._own_client = client is None
        self._clock = clock
        self.written: int | None = None  # the value the annotation holds, as last written
        self._at = -float("inf")  # when it was last written (or last failed)
        self.failures = 0
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.pod is not None

    def due(self, calls: int) -> bool:
        """Whether ``calls`` should be written now."""
        if calls == self.written:
            return False
        if self.written is None or (calls == 0) != (self.written == 0):
            return self.failures == 0 or self._clock() - self._at >= min(self.interval_s, 5.0)
        return self._clock() - self._at >= self.interval_s

    async def update(self, calls: int) -> bool:
        """Write ``calls`` if due; True if the annotation now holds it."""
        if self.pod is None or not self.due(calls):
            return calls == self.written
        self._at = self._clock()
        try:
            resp = await self._http().patch(
                self.pod.url,
                content=_patch_body(calls),
                headers={
                    "Authorization": f"Bearer {self.pod.token_path.read_text().strip()}",
                    "Content-Type": "application/merge-patch+json",
                    "Accept": "application/json",
                },
                timeout=PATCH_TIMEOUT_S,
            )
        except (httpx.HTTPError, OSError) as e:
            self._failed(f"{type(e).__name__}: {e}")
            return False
        if resp.status_code != 200:
            self._failed(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return False
        if self.failures:
            log.info("pod-deletion cost written again after %d failures", self.failures)
        self.failures = 0
        self.written = calls
        return True

    def _failed(self, why: str) -> None:
        self.failures += 1
        if self.failures in (1, 10) or self.failures % 100 == 0:
            log.warning("could not set the pod-deletion cost (%d): %s", self.failures, why)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            assert self.pod is not None
            ca = self.pod.ca_path
            verify: Any = str(ca) if ca is not None and ca.is_file() else True
            self._client = httpx.AsyncClient(verify=verify)
        return self._client

    def start(self, calls: Callable[[], int]) -> None:
        """Poll ``calls()`` in the background (never on the call path) until ``stop``."""
        if self.pod is not None and self._task is None:
            self._task = asyncio.create_task(self._run(calls))

    async def _run(self, calls: Callable[[], int]) -> None:
        while True:
            try:
                await self.update(calls())
            except Exception:  # never let the poller die
                log.exception("pod-deletion cost update failed")
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None


def _patch_body(calls: int) -> bytes:
    # A JSON merge patch of one annotation; its value is a string holding an int32.
    return b'{"metadata":{"annotations":{"%s":"%d"}}}' % (ANNOTATION.encode(), calls)


def from_settings(settings: Any) -> DeletionCost:
    return DeletionCost(in_cluster(settings), settings.pod_deletion_cost_interval_s)
