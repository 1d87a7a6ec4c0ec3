"""Smoke test of `dragoman bench latency`: it runs end to end and its report adds up.
Benchmarks are not tests: nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ("vad", "stt", "queue", "tts", "output")


@pytest.mark.e2e  # a whole command run
def test_latency_command_reports_stages_that_add_up(tmp_path: Path) -> None:
    out = tmp_path / "latency"
    exe = Path(sys.executable).with_name("dragoman")
    proc = subprocess.run(
        [str(exe), "bench", "latency", "--sentences", "2", "--voice", "en", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads((out / "latency.json").read_text())
    assert rep["sentences"] == 2 and rep["failed"] == 0 and rep["voice"].startswith("piper en")
    for row in rep["per_sentence"]:
        assert row["speech_s"] > 1.0
        assert all(row[s] >= 0 for s in STAGES if s != "queue"), row
        # The agent's marks fall between the end of the sentence and the audio the client
        # heard, in pipeline order (every stage above is non-negative; the total itself is
        # the client's own measurement, so it bounds the agent's last mark independently).
        assert row["total"] >= row["vad"] + row["stt"], row
        assert row["vad"] > 300  # the VAD waits for vad_stop_s (0.5 s) of silence
    assert rep["total_ms"]["count"] == 2
    assert (out / "latency.png").stat().st_size > 10_000
