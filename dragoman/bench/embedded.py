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


@contextmanager
def embedded_server(log_path: Path, **env: str) -> Iterator[str]:
    with embedded_process(log_path, **env) as (url, _proc):
        yield url


@contextmanager
def embedded_process(
    log_path: Path, cpus: set[int] | None = None, **env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ready ``dragoman serve`` and its process; ``cpus`` pins it (and every process it
    forks) to those CPUs, so a benchmark can keep its load clients off them."""
    port = free_port()
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
                h = httpx.get(f"{url}/healthz", timeout=2).json()
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
