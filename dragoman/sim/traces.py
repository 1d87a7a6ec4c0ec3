"""Call traces: when each caller presses Call and how long they stay.

Built-in traces are target concurrency curves (piecewise linear). Arrivals are drawn as a
Poisson process of rate λ(t) = max(0, C'(t)) + C(t) / mean session, i.e. the growth of the
curve plus the replacement of calls that end, so the realised concurrency follows the curve
on the way up and decays at the calls' own pace on the way down.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUILTIN = ("surge", "day", "flash")


@dataclass(frozen=True)
class Sessions:
    """Call length: lognormal (a few long calls, many short ones), capped at ``max_call_s``."""

    median_s: float = 180.0
    sigma: float = 1.0
    max_call_s: float = 1800.0  # Settings.max_call_s: the worker ends longer calls

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.lognormal(math.log(self.median_s), self.sigma, n)
        return np.minimum(x, self.max_call_s)

    @property
    def mean_s(self) -> float:
        """E[min(X, cap)] of the lognormal, exactly."""
        mu, s, cap = math.log(self.median_s), self.sigma, self.max_call_s

        def phi(z: float) -> float:
            return 0.5 * (1 + math.erf(z / math.sqrt(2)))

        below = math.exp(mu + s * s / 2) * phi((math.log(cap) - mu - s * s) / s)
        return below + cap * (1 - phi((math.log(cap) - mu) / s))


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    arrivals: np.ndarray  # press times, seconds, sorted
    durations: np.ndarray  # seconds on the call once connected
    horizon_s: float  # end of the traffic described (calls may run past it)
    curve: tuple[np.ndarray, np.ndarray] | None = None  # (t, target concurrency), for plots

    @property
    def calls(self) -> int:
        return int(self.arrivals.size)

    @property
    def user_minutes(self) -> float:
        return float(self.durations.sum()) / 60


def _from_curve(
    name: str,
    description: str,
    points: list[tuple[float, float]],
    sessions: Sessions,
    rng: np.random.Generator,
    extra: list[list[tuple[float, float]]] | None = None,
) -> Trace:
    ts, cs = zip(*points, strict=True)
    horizon = float(ts[-1])
    grid = np.arange(0.0, horizon + 1.0)
    conc = np.interp(grid, ts, cs)
    for spike in extra or []:
        st, sc = zip(*spike, strict=True)
        conc += np.interp(grid, st, sc, left=0.0, right=0.0)
    growth = np.maximum(0.0, np.diff(conc, append=conc[-1]))
    rate = growth + conc / sessions.mean_s
    counts = rng.poisson(rate[:-1])  # per second [k, k+1)
    starts = np.repeat(grid[:-1], counts) + rng.random(int(counts.sum()))
    starts.sort()
    return Trace(
        name, description, starts, sessions.sample(rng, starts.size), horizon, (grid, conc)
    )


def surge(sessions: Sessions, rng: np.random.Generator, scale: float = 1.0) -> Trace:
    peak = 5000 * scale
    pts = [(0, 0), (30, 0), (90, peak), (390, peak), (510, 0)]
    desc = f"0 → {peak:.0f} concurrent within 60 s (from t=30 s), hold 5 min, fall over 2 min"
    return _from_curve("surge", desc, pts, sessions, rng)


# A working day (hour → concurrent calls): quiet night, morning ramp, lunch peak, evening
# decline. Random spikes come on top (news, a tour group, a conference break).
DAY_CURVE = [
    (0, 80), (5, 30), (7, 300), (9, 1500), (11.5, 2000), (12.5, 3000), (13.5, 2000),
    (15, 1800), (18, 1200), (20, 600), (22, 250), (24, 80),
]  # fmt: skip


def day(sessions: Sessions, rng: np.random.Generator, scale: float = 1.0) -> Trace:
    pts = [(h * 3600, c * scale) for h, c in DAY_CURVE]
    spikes = []
    for _ in range(8):
        t = rng.uniform(8 * 3600, 20 * 3600)
        height = rng.uniform(500, 1500) * scale
        hold = rng.uniform(60, 240)
        spikes.append([(t, 0), (t + 30, height), (t + 30 + hold, height), (t + 90 + hold, 0)])
    desc = (
        f"24 h: night {30 * scale:.0f}–{80 * scale:.0f}, lunch peak {3000 * scale:.0f} "
        f"concurrent, 8 random spikes of +{500 * scale:.0f}–{1500 * scale:.0f} within 30 s"
    )
    return _from_curve("day", desc, pts, sessions, rng, spikes)


def flash(sessions: Sessions, rng: np.random.Generator, scale: float = 1.0) -> Trace:
    base, top = 300 * scale, 3000 * scale
    pts: list[tuple[float, float]] = [(0, base)]
    for k in range(6):
        t = 300 + k * 900
        pts += [(t, base), (t + 20, top), (t + 140, top), (t + 200, base)]
    pts.append((300 + 6 * 900, base))
    desc = f"base {base:.0f} concurrent, 6 spikes to {top:.0f} (10×) within 20 s, every 15 min"
    return _from_curve("flash", desc, pts, sessions, rng)


def from_csv(path: Path, sessions: Sessions, rng: np.random.Generator) -> Trace:
    """``arrival_s[,duration_s]`` rows (one per call; missing durations are drawn), or
    ``t_s,concurrent`` rows (a target curve, turned into arrivals like the built-ins)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    cols = set(rows[0])
    if {"t_s", "concurrent"} <= cols:
        pts = [(float(r["t_s"]), float(r["concurrent"])) for r in rows]
        return _from_curve(path.stem, f"curve from {path.name}", pts, sessions, rng)
    if "arrival_s" not in cols:
        raise ValueError(f"{path}: need columns arrival_s[,duration_s] or t_s,concurrent")
    arrivals = np.array([float(r["arrival_s"]) for r in rows])
    order = np.argsort(arrivals, kind="stable")
    if "duration_s" in cols:
        durations = np.array([float(r["duration_s"]) for r in rows])
    else:
        durations = sessions.sample(rng, arrivals.size)
    arrivals, durations = arrivals[order], durations[order]
    desc = f"{arrivals.size} calls from {path.name}"
    return Trace(path.stem, desc, arrivals, durations, float(arrivals.max(initial=0.0)))


def load(name: str, sessions: Sessions, seed: int = 1, scale: float = 1.0) -> Trace:
    rng = np.random.default_rng(seed)
    builders = {"surge": surge, "day": day, "flash": flash}
    if name in builders:
        return builders[name](sessions, rng, scale)
    path = Path(name)
    if path.suffix.lower() == ".csv" and path.exists():
        return from_csv(path, sessions, rng)
    raise ValueError(f"unknown trace {name!r}: use {', '.join(BUILTIN)} or a .csv file")
