"""The fleet tests' hosts: network namespaces (``dragoman.bench.netns``) and HTTP waits."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterable

import httpx

from dragoman.bench.netns import SUBNET, Host, HostNet, dragoman_exe, redis_argv, sh

__all__ = [
    "SUBNET",
    "Host",
    "HostNet",
    "await_http",
    "dragoman_exe",
    "redis_argv",
    "sh",
    "stop_all",
    "wait_http",
]


async def await_http(url: str, timeout: float, ok=lambda r: r.status_code == 200) -> httpx.Response:
    """wait_http for async tests: never blocks the loop that runs the callers' media."""
    deadline = time.monotonic() + timeout
    last: object = None
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                r = await client.get(url)
                if ok(r):
                    return r
                last = r.text[:200]
            except httpx.HTTPError as e:
                last = e
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout} s: {last}")


def wait_http(url: str, timeout: float, ok=lambda r: r.status_code == 200) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if ok(r):
                return r
            last = r.text[:200]
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout} s: {last}")


def stop_all(procs: Iterable[subprocess.Popen], grace_s: float = 20) -> None:
    """SIGTERM every process still running, then wait for each (its drain, its children),
    killing one that outlasts ``grace_s``."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
