"""Start a throwaway ``dragoman serve`` for a benchmark, as a separate process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from dragoman.config import default_internal_port

# Load generators call from one address many times a second: the abuse limits meant for
# the public would measure themselves. Benchmarks and most tests run without them.
NO_ABUSE_LIMITS = {
    "DRAGOMAN_CALLS_PER_MINUTE_PER_IP": "0",
    "DRAGOMAN_CALLS_PER_MINUTE_PER_SUBJECT": "0",
    "DRAGOMAN_CONCURRENT_CALLS_PER_IP": "0",
    "DRAGOMAN_CONCURRENT_CALLS_PER_SUBJECT": "0",
    "DRAGOMAN_DIRECT_SESSIONS_PER_HOUR": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_serve_port() -> int:
    """A free port whose default internal port (``config.default_internal_port``) is free
    too: a ``serve`` started on it with no DRAGOMAN_INTERNAL_PORT can bind both."""
    while True:
        port = free_port()
        if _bindable(default_internal_port(port)):
            return port


def internal_url(url: str) -> str:
    """A ``serve``/``api`` URL's internal listener (health, metrics, autoscale), at its
    default port: ``http://host:8000`` → ``http://host:9000``."""
    base, _, port = url.rstrip("/").rpartition(":")
    return f"{base}:{default_internal_port(int(port))}"


@contextmanager
def embedded_server(log_path: Path, **env: str) -> Iterator[str]:
    with embedded_process(log_path, **env) as (url, _proc):
        yield url


@contextmanager
def embedded_process(
    log_path: Path, cpus: set[int] | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ready ``dragoman serve`` and its process; ``cpus`` pins it (and every process it
    forks) to those CPUs, so a benchmark can keep its load clients off them. Its health and
    metrics are at ``internal_url(url)``."""
    port = free_serve_port()
    full_env = {
        **os.environ,
        "DRAGOMAN_PORT": str(port),
        "DRAGOMAN_LOG_LEVEL": "WARNING",
        **NO_ABUSE_LIMITS,
        **env,
    }
    exe = Path(sys.executable).with_name("dragoman")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(exe), "serve"],
            env=full_env,
            stdout=log,
            stderr=log,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"embedded server exited; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded server not ready; see {log_path}")
            try:
                h = httpx.get(f"{internal_url(url)}/healthz", timeout=2).json()
                if h["idle_agents"] >= h["idle_target"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
