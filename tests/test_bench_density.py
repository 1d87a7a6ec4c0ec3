"""Smoke test of `dragoman bench density`: it runs end to end and its report is well formed.
Benchmarks are not tests: nothing here asserts a speed or a capacity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e  # a whole command run
def test_density_command_writes_a_well_formed_report(tmp_path: Path) -> None:
    out = tmp_path / "density"
    exe = Path(sys.executable).with_name("dragoman")
    proc = subprocess.run(
        [
            str(exe),
            "bench",
            "density",
            "--step",
            "1",
            "--max-calls",
            "2",
            "--step-seconds",
            "12",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((out / "density.json").read_text())
    assert [s["calls"] for s in rep["steps"]][:1] == [1]
    for step in rep["steps"]:
        assert step["frames"] > 0, step  # agents reported their audio pacing
        assert 0.0 <= step["on_time"] <= 1.0
        assert step["server_cores_used"] > 0
        assert step["uss_mb"] and step["pss_mb"] >= step["uss_mb"]
    assert rep["server_cores"] >= 1 and "FAKE" in rep["mode"]
    assert rep["calls_per_core"] == rep["calls_at_goal"] / rep["server_cores"]
    assert (out / "density.png").stat().st_size > 10_000
    assert "calls/core" in proc.stdout


def test_frame_counts_are_read_from_prometheus_text() -> None:
    from dragoman.bench.density import parse_frame_counts

    text = (
        "# HELP dragoman_worker_audio_frames_total Audio frames sent\n"
        "# TYPE dragoman_worker_audio_frames_total counter\n"
        'dragoman_worker_audio_frames_total{outcome="on_time"} 1.5e+03\n'
        'dragoman_worker_audio_frames_total{outcome="late"} 7.0\n'
        'dragoman_worker_audio_frames_created{outcome="late"} 1.7e+09\n'
        "# TYPE dragoman_worker_calls gauge\n"
        "dragoman_worker_calls 3.0\n"
    )
    assert parse_frame_counts(text) == {"on_time": 1500.0, "late": 7.0}
