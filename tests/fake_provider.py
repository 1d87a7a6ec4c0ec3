"""Runs the FAKE provider server (dragoman.fakes) as its own process for a test module."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dragoman.bench.embedded import free_port

KEY = "sk-test-not-a-real-key-4f1c"
GEMINI_KEY = "gm-test-not-a-real-key-77aa"


@dataclass
class Fake:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/fake/state", timeout=5).json()

    def fault(self, **fault: Any) -> None:
        httpx.post(f"{self.url}/fake/fault", json=fault, timeout=5).raise_for_status()

    def sessions(self, kind: str) -> list[dict[str, Any]]:
        return [s for s in self.state()["sessions"] if s.get("kind") == kind]


def start_fake(log_dir: Path) -> Fake:
    port = free_port()
    log = (log_dir / f"fake-{port}.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dragoman.fakes.server",
            "--port",
            str(port),
            "--key",
            KEY,
            "--gemini-key",
            GEMINI_KEY,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    fake = Fake(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"fake provider exited: {(log_dir / f'fake-{port}.log').read_text()}"
            )
        try:
            fake.state()
            return fake
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("fake provider did not start")


def stop_fake(fake: Fake) -> None:
    fake.proc.terminate()
    try:
        fake.proc.wait(10)
    except subprocess.TimeoutExpired:
        fake.proc.kill()
