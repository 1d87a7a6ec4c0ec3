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
    tls_url: str  # https://127.0.0.1:TLS_PORT: the same routes over TLS (Gemini's SDK needs it)
    ca_file: Path  # the TLS port's self-signed certificate

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    @property
    def gemini_base(self) -> str:
        return self.tls_url

    def trusting_env(self) -> dict[str, str]:
        """Settings for a server that talks to the fake's TLS port: its certificate is the
        one the SDKs trust (they read SSL_CERT_FILE)."""
        return {"SSL_CERT_FILE": str(self.ca_file)}

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/fake/state", timeout=5).json()

    def fault(self, **fault: Any) -> None:
        httpx.post(f"{self.url}/fake/fault", json=fault, timeout=5).raise_for_status()

    def sessions(self, kind: str) -> list[dict[str, Any]]:
        return [s for s in self.state()["sessions"] if s.get("kind") == kind]


def start_fake(log_dir: Path) -> Fake:
    port, tls_port = free_port(), free_port()
    cert_dir = log_dir / "tls"
    log = (log_dir / f"fake-{port}.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dragoman.fakes.server",
            "--port",
            str(port),
            "--tls-port",
            str(tls_port),
            "--cert-dir",
            str(cert_dir),
            "--key",
            KEY,
            "--gemini-key",
            GEMINI_KEY,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    fake = Fake(
        f"http://127.0.0.1:{port}", proc, f"https://127.0.0.1:{tls_port}", cert_dir / "cert.pem"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"fake provider exited: {(log_dir / f'fake-{port}.log').read_text()}"
            )
        try:
            fake.state()
            if fake.ca_file.exists():
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
