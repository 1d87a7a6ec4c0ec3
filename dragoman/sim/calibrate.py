"""What one node does, measured or assumed: connect time of a call that finds a warm agent
process, how long a replacement process takes to become ready, and call slots per node.

``dragoman bench connect`` writes ``connect.json``: its ``per_call[].first_audio_ms``
(press Call → first agent audio, HTTP + ICE + DTLS + chime) become the warm connect-time
samples. Slots and refill time are read when the file has them (``slots_per_node`` or
``calls_per_core``; ``agent_ready_ms``: a summary with ``p50`` or a number), which a density
benchmark would write; connect.json alone calibrates only the connect time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Without measurements: lognormal, median 250 ms, p99 ≈ 560 ms. README "Performance": one
# call's press → first audio is p50 152 ms / max 182 ms on the 2-vCPU dev box, on loopback;
# ~100 ms is added for a real client's round trips (HTTP answer, ICE check, DTLS).
DEFAULT_CONNECT_MEDIAN_S = 0.25
DEFAULT_CONNECT_SIGMA = 0.35
# A replacement agent: fork from the preloaded forkserver (ms), then Silero VAD load and a
# WebRTC peer with its DTLS certificate built while idle; a few hundred ms on one core.
DEFAULT_REFILL_S = 0.3


@dataclass(frozen=True)
class Calibration:
    source: str = "defaults"
    connect_samples_s: tuple[float, ...] = field(default=(), repr=False)  # empty: lognormal
    refill_s: float = DEFAULT_REFILL_S
    slots_per_node: int | None = None  # None: the machine profile's
    calls_per_core: float | None = None

    def draw_connect(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.connect_samples_s:
            return rng.choice(np.asarray(self.connect_samples_s), n)
        return rng.lognormal(math.log(DEFAULT_CONNECT_MEDIAN_S), DEFAULT_CONNECT_SIGMA, n)

    def summary(self) -> dict[str, Any]:
        xs = np.asarray(self.connect_samples_s)
        return {
            "source": self.source,
            "connect_samples": int(xs.size),
            "connect_p50_ms": round(float(np.median(xs)) * 1000, 1) if xs.size else None,
            "default_connect": None
            if xs.size
            else f"lognormal median {DEFAULT_CONNECT_MEDIAN_S * 1000:.0f} ms, "
            f"sigma {DEFAULT_CONNECT_SIGMA}",
            "refill_s": self.refill_s,
            "slots_per_node": self.slots_per_node,
            "calls_per_core": self.calls_per_core,
        }


def load(path: Path | None) -> Calibration:
    if path is None:
        return Calibration()
    data = json.loads(Path(path).read_text())
    samples = tuple(
        r["first_audio_ms"] / 1000
        for r in data.get("per_call", [])
        if r.get("status") == 201 and r.get("first_audio_ms") is not None
    )
    if "per_call" in data and not samples:
        raise ValueError(f"{path}: no answered call with first_audio_ms to calibrate from")
    ready = data.get("agent_ready_ms")
    if isinstance(ready, dict):
        ready = ready.get("p50")
    slots = data.get("slots_per_node")
    return Calibration(
        source=str(path),
        connect_samples_s=samples,
        refill_s=float(ready) / 1000 if ready else DEFAULT_REFILL_S,
        slots_per_node=int(slots) if slots else None,
        calls_per_core=float(data["calls_per_core"]) if data.get("calls_per_core") else None,
    )
