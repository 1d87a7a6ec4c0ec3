"""What one node does, measured: slots per node, connect time (as a function of the
handshakes a node is doing at once and of how full it is), refill time, direct-mode connect
time — read from the committed outputs of ``dragoman bench calibrate`` (``results/calibration``:
``connect.json``, ``direct.json``, ``density.json``), never from constants.

Where a figure comes from the 2-vCPU development machine rather than the modelled instance:

* **Slots per node** = calls per core (``bench density``: the server pinned to one core, at
  ≥ 99.5 % of packets on time) × the instance's vCPUs. A Graviton vCPU is a physical core
  (no SMT); the development machine's are shared x86 vCPUs — no speed ratio is applied.
* **Connect time** at k simultaneous handshakes is the measured press → first agent packet of
  a burst of k callers on an idle one-core node, unscaled on the 4-vCPU node (its worker's
  event loop and Janus' NoSIP plugin are one thread each). The callers ran on the same
  machine: their own WebRTC work is in the figures, which makes them upper bounds.
* **Node load** is the node's fill (calls / slots): a burst on a one-core node carrying n
  calls is compared with the same burst on an idle one; the ratio of the server's own answer
  times (POST handled → answer, measured inside the server, whose core the clients do not
  share) multiplies the connect time at that fill.
* **Refill**: fork requested → agent ready, as the pool itself timed it during the runs.

Not measurable here, added as stated assumptions (``SimParams``): the network round trips of
a real caller, and of a real provider — a cloud-AI agent's first audio waits for its
provider session (TCP + TLS + WebSocket/session: 3 round trips), and a direct-mode call is
the measured fake round trip plus its 7 provider round trips (see ``Calibration``).

``--calibrate FILE`` also takes a single ``bench connect`` or ``bench density`` JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIR = Path("results/calibration")
_REPO_DIR = Path(__file__).resolve().parents[2] / "results" / "calibration"
QUANTILES = 200  # the connect model's resolution

# Round trips on a call's path that a loopback measurement does not contain.
AGENT_CALLER_RTTS = 4.5  # POST /v1/calls 1, ICE check 1, DTLS 2, first packet ½
AGENT_PROVIDER_RTTS = 3.0  # cloud-AI agent → provider: TCP 1, TLS 1.3 1, WebSocket/session 1
DIRECT_CALLER_RTTS = 1.0  # POST /v1/calls (overflow answer)
DIRECT_PROVIDER_RTTS = 7.0  # mint 1 (api, pooled); page: TCP 1, TLS 1, SDP 1, ICE 1, DTLS 2

# Without any measurement (no calibration folder): the old assumptions, said loudly.
UNCALIBRATED_CONNECT_MEDIAN_S = 0.25
UNCALIBRATED_CONNECT_SIGMA = 0.35
UNCALIBRATED_REFILL_S = 0.3


def _grid(samples: list[float]) -> np.ndarray:
    return np.quantile(np.asarray(samples, dtype=float), np.linspace(0, 1, QUANTILES + 1))


@dataclass(frozen=True)
class ConnectModel:
    """Seconds from pressing Call to the first agent packet, on loopback, for a call that
    finds a warm agent on a node doing ``k`` handshakes (itself included) at fill ``f``.

    The measured quantile functions at each burst size are interpolated linearly in k (and
    extrapolated past the largest with the last slope, never downwards); the load factor is
    interpolated in fill, and extrapolated the same way."""

    sizes: tuple[int, ...]
    grids: tuple[np.ndarray, ...] = field(repr=False)  # quantile grid per size, seconds
    fills: tuple[float, ...] = (0.0,)
    factors: tuple[float, ...] = (1.0,)
    # The server's own part (POST handled → answer) per size: what node load stretches.
    server_grids: tuple[np.ndarray, ...] | None = field(default=None, repr=False)

    def quantile(self, k: float, q: float, server: bool = False) -> float:
        i = min(QUANTILES, max(0, int(q * QUANTILES)))
        sizes = self.sizes
        grids = self.server_grids if server and self.server_grids else self.grids
        if len(sizes) == 1 or k <= sizes[0]:
            return float(grids[0][i])
        for lo in range(len(sizes) - 1):
            if k <= sizes[lo + 1]:
                a, b = sizes[lo], sizes[lo + 1]
                break
        else:
            lo = len(sizes) - 2
            a, b = sizes[lo], sizes[lo + 1]
        ya, yb = float(grids[lo][i]), float(grids[lo + 1][i])
        slope = (yb - ya) / (b - a)
        if k > b:
            slope = max(0.0, slope)
        return max(0.0, ya + slope * (k - a))

    def factor(self, fill: float) -> float:
        xs, ys = self.fills, self.factors
        if len(xs) == 1 or fill <= xs[0]:
            return ys[0]
        if fill <= xs[-1]:
            return float(np.interp(fill, xs, ys))
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return ys[-1] + slope * (fill - xs[-1])

    def draw(self, rng: np.random.Generator, k: int, fill: float) -> float:
        """The call's time as measured at k handshakes on an idle node, with the server's
        own part of it stretched by the load factor at this fill."""
        q = float(rng.random())
        total = self.quantile(k, q)
        f = self.factor(fill)
        if f == 1.0 or self.server_grids is None:
            return total
        return total + (f - 1.0) * self.quantile(k, q, server=True)


@dataclass(frozen=True)
class Calibration:
    source: str = "uncalibrated"
    sources: tuple[str, ...] = ()
    connect: ConnectModel | None = None  # None: lognormal, median 250 ms (uncalibrated)
    refill_samples_s: tuple[float, ...] = ()
    direct_samples_s: tuple[float, ...] = ()  # press → provider connected, fake, loopback
    slots_per_node: int | None = None  # a file may fix it outright
    calls_per_core: float | None = None
    cpu_per_call_pct: float | None = None
    call_uss_mb: float | None = None
    idle_agent_mb: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def calibrated(self) -> bool:
        return bool(self.sources)

    def draw_connect(self, rng: np.random.Generator, k: int, fill: float) -> float:
        if self.connect is not None:
            return self.connect.draw(rng, k, fill)
        return float(
            rng.lognormal(math.log(UNCALIBRATED_CONNECT_MEDIAN_S), UNCALIBRATED_CONNECT_SIGMA)
        )

    def draw_refill(self, rng: np.random.Generator) -> float:
        if self.refill_samples_s:
            return float(self.refill_samples_s[int(rng.integers(len(self.refill_samples_s)))])
        return UNCALIBRATED_REFILL_S

    def draw_direct(self, rng: np.random.Generator) -> float | None:
        if not self.direct_samples_s:
            return None
        return float(self.direct_samples_s[int(rng.integers(len(self.direct_samples_s)))])

    def summary(self) -> dict[str, Any]:
        c = self.connect
        connect: dict[str, Any] | None = None
        if c is not None:
            connect = {
                "burst_sizes": list(c.sizes),
                "p50_ms_by_burst": [round(c.quantile(k, 0.5) * 1000, 1) for k in c.sizes],
                "p95_ms_by_burst": [round(c.quantile(k, 0.95) * 1000, 1) for k in c.sizes],
                "load_fills": [round(x, 3) for x in c.fills],
                "load_factors": [round(x, 3) for x in c.factors],
            }
        refill = np.asarray(self.refill_samples_s) * 1000
        direct = np.asarray(self.direct_samples_s) * 1000
        return {
            "source": self.source,
            "calibrated": self.calibrated,
            "sources": list(self.sources),
            "connect": connect,
            "uncalibrated_connect": None
            if c is not None
            else f"lognormal median {UNCALIBRATED_CONNECT_MEDIAN_S * 1000:.0f} ms, "
            f"sigma {UNCALIBRATED_CONNECT_SIGMA}",
            "refill_ms": _pcts(refill) if refill.size else UNCALIBRATED_REFILL_S * 1000,
            "direct_fake_ms": _pcts(direct) if direct.size else None,
            "slots_per_node": self.slots_per_node,
            "calls_per_core": self.calls_per_core,
            "cpu_per_call_pct": self.cpu_per_call_pct,
            "call_uss_mb": self.call_uss_mb,
            "idle_agent_mb": self.idle_agent_mb,
            "notes": list(self.notes),
        }


def _pcts(xs: np.ndarray) -> dict[str, float]:
    return {
        "n": int(xs.size),
        "p50": round(float(np.percentile(xs, 50)), 1),
        "p95": round(float(np.percentile(xs, 95)), 1),
        "max": round(float(xs.max()), 1),
    }


# --- loading ---------------------------------------------------------------------------------


def default_dir() -> Path | None:
    """``results/calibration`` here, else the one in this checkout; None if neither exists."""
    for d in (DEFAULT_DIR, _REPO_DIR):
        if (d / "connect.json").is_file() or (d / "density.json").is_file():
            return d
    return None


def load(path: Path | str | None = None, uncalibrated: bool = False) -> Calibration:
    """The calibration in ``path`` (a folder written by ``bench calibrate``, or one bench
    JSON file); with no path the committed one; ``uncalibrated``: the old constants."""
    if uncalibrated:
        return Calibration(notes=("uncalibrated: assumed constants, not measurements",))
    if path is None:
        found = default_dir()
        if found is None:
            return Calibration(
                notes=("no results/calibration found: assumed constants, not measurements",)
            )
        path = found
    path = Path(path)
    if path.is_dir():
        return _from_dir(path)
    return _from_file(path)


def _from_dir(d: Path) -> Calibration:
    connect = _read(d / "connect.json")
    direct = _read(d / "direct.json")
    density = _read(d / "density.json")
    if connect is None and density is None:
        raise ValueError(f"{d}: no connect.json or density.json to calibrate from")
    read = {"connect.json": connect, "direct.json": direct, "density.json": density}
    sources = tuple(str(d / name) for name, x in read.items() if x is not None)
    per_core = _density(density)
    model, refill, idle_mb, notes = None, (), None, []
    if connect is not None:
        capacity = per_core[0] * connect.get("server_cpus", 1) if per_core[0] else None
        model, refill, notes = _connect_model(connect, capacity)
        idle_mb = connect.get("idle_agent_mb")
    return Calibration(
        source=str(d),
        sources=sources,
        connect=model,
        refill_samples_s=refill,
        direct_samples_s=_direct_samples(direct),
        calls_per_core=per_core[0],
        cpu_per_call_pct=per_core[1],
        call_uss_mb=per_core[2],
        idle_agent_mb=idle_mb,
        notes=tuple(notes),
    )


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _density(data: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    if not data:
        return None, None, None
    per_core = data.get("calls_per_core")
    return (
        float(per_core) if per_core else None,
        data.get("cpu_per_call_pct"),
        data.get("call_uss_mb"),
    )


def _ok(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] / 1000 for r in rows if r.get("status") == 201 and r.get(key) is not None]


def _connect_model(
    data: dict[str, Any], capacity: float | None
) -> tuple[ConnectModel, tuple[float, ...], list[str]]:
    runs = data["runs"]
    idle: dict[int, list[float]] = {}
    for run in runs:
        if run["background_calls"] == 0:
            idle.setdefault(run["burst"], []).extend(_ok(run["per_call"], "first_packet_ms"))
    server: dict[int, list[float]] = {}
    for run in runs:
        if run["background_calls"] == 0:
            server.setdefault(run["burst"], []).extend(_ok(run["per_call"], "server_ms"))
    sizes = sorted(k for k, xs in idle.items() if xs)
    if not sizes:
        raise ValueError("connect.json: no answered call on an idle node")
    notes = []
    fills, factors = [0.0], [1.0]
    loaded = [r for r in runs if r["background_calls"] > 0]
    if loaded and capacity:
        base = server.get(loaded[0]["burst"], [])
        by_bg: dict[int, list[float]] = {}
        for r in loaded:
            by_bg.setdefault(r["background_calls"], []).extend(_ok(r["per_call"], "server_ms"))
        if base:
            b50 = float(np.median(base))
            for n in sorted(by_bg):
                if by_bg[n]:
                    fills.append(n / capacity)
                    factors.append(max(1.0, float(np.median(by_bg[n])) / b50))
    elif loaded:
        notes.append("no density measurement: node load not modelled")
    refill = tuple(x / 1000 for r in runs for x in r.get("agent_ready_ms", []))
    server_grids = (
        tuple(_grid(server[k]) for k in sizes) if all(server.get(k) for k in sizes) else None
    )
    model = ConnectModel(
        tuple(sizes),
        tuple(_grid(idle[k]) for k in sizes),
        tuple(fills),
        tuple(factors),
        server_grids,
    )
    return model, refill, notes


def _direct_samples(data: dict[str, Any] | None) -> tuple[float, ...]:
    if not data:
        return ()
    return tuple(
        r["connected_ms"] / 1000 for r in data["per_call"] if r.get("connected_ms") is not None
    )


def _from_file(path: Path) -> Calibration:
    """One ``bench connect`` (per_call rows) or ``bench density`` (calls_per_core) JSON."""
    data = json.loads(path.read_text())
    if "runs" in data:  # a connect.json of bench calibrate, alone
        model, refill, notes = _connect_model(data, None)
        return Calibration(str(path), (str(path),), model, refill, notes=tuple(notes))
    model = None
    if "per_call" in data:
        rows = data["per_call"]
        key = "first_packet_ms" if any(r.get("first_packet_ms") for r in rows) else "first_audio_ms"
        samples = _ok(rows, key)
        if not samples:
            raise ValueError(f"{path}: no answered call with {key} to calibrate from")
        model = ConnectModel((1,), (_grid(samples),))
    per_core = _density(data)
    slots = data.get("slots_per_node")
    ready = data.get("agent_ready_ms")
    if isinstance(ready, dict):
        ready = ready.get("p50")
    return Calibration(
        source=str(path),
        sources=(str(path),),
        connect=model,
        refill_samples_s=(float(ready) / 1000,) if isinstance(ready, int | float) else (),
        slots_per_node=int(slots) if slots else None,
        calls_per_core=per_core[0],
        cpu_per_call_pct=per_core[1],
        call_uss_mb=per_core[2],
        notes=("one file: whatever it does not hold is assumed",),
    )
