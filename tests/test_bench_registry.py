"""Smoke test of `dragoman bench registry` against a throwaway Redis: it runs end to end,
saves its report and leaves no key behind. Benchmarks are not tests: no speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer

from dragoman.bench.registry_burst import redacted


@pytest.mark.e2e  # a whole command run, against a redis-server
def test_registry_command_saves_its_rate_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "registry"
    exe = Path(sys.executable).with_name("dragoman")
    with RedisServer() as server:
        proc = subprocess.run(
            [str(exe), "bench", "registry", server.url, "-n", "300", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert redis.Redis.from_url(server.url).dbsize() == 0
    assert "reservations/s" in proc.stdout
    rep = json.loads((out / "registry.json").read_text())
    assert rep["pairs_per_s"] > 0 and rep["params"]["pairs"] == 300


def test_a_password_never_reaches_the_output() -> None:
    assert redacted("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redacted("redis://user:s3cret@db/0") == "redis://user:***@db/0"
    assert redacted("redis://db:6379/0") == "redis://db:6379/0"
