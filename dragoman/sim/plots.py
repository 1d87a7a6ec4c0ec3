"""PNG plots of a simulation (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _time_axis(t: np.ndarray) -> tuple[np.ndarray, str]:
    if t.size and t.max() > 3 * 3600:
        return t / 3600, "hours"
    return t / 60, "minutes"


def demand_vs_capacity(rep: dict[str, Any], path: Path, title: str) -> None:
    tl = {k: np.asarray(v) for k, v in rep["timeline"].items()}
    x, unit = _time_axis(tl["t_s"])
    fig, ax = plt.subplots(figsize=(8, 4.8))
    if rep.get("curve"):
        cx, _ = _time_axis(np.asarray(rep["curve"]["t_s"]))
        ax.plot(cx, rep["curve"]["concurrent"], color="0.7", lw=1, label="trace's target curve")
    if tl["retrying_calls"].any():
        ax.plot(x, tl["retrying_calls"], label="callers waiting to retry", color="tab:red", lw=1)
    ax.plot(x, tl["active_calls"], label="calls on agents", color="tab:blue")
    if tl["direct_calls"].any():
        ax.plot(x, tl["direct_calls"], label="calls in direct mode", color="tab:purple", lw=1)
    ax.plot(x, tl["warm_slots"], label="warm slots (READY nodes)", color="tab:green")
    ax.plot(x, tl["warm_slots"] + tl["booting_slots"], label="+ slots booting",
            color="tab:green", ls="--", lw=1)  # fmt: skip
    ax.set_xlabel(unit)
    ax.set_ylabel("calls / call slots")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
    active = tl["active_calls"]
    if unit == "minutes" and active.max(initial=0) > 0:
        # Zoom on the climb: until a minute after calls first reach 95 % of their peak.
        until = x[np.argmax(active >= 0.95 * active.max())] + 1
        inset = ax.inset_axes((0.62, 0.08, 0.35, 0.4))
        shown = x <= until
        inset.plot(x[shown], active[shown], color="tab:blue")
        if tl["direct_calls"][shown].any():
            inset.plot(x[shown], tl["direct_calls"][shown], color="tab:purple", lw=1)
        inset.plot(x[shown], tl["warm_slots"][shown], color="tab:green")
        inset.plot(x[shown], (tl["warm_slots"] + tl["booting_slots"])[shown], color="tab:green",
                   ls="--", lw=1)  # fmt: skip
        if tl["retrying_calls"][shown].any():
            inset.plot(x[shown], tl["retrying_calls"][shown], color="tab:red", lw=1)
        inset.set_title(f"first {until:.1f} min", fontsize=7)
        inset.tick_params(labelsize=7)
        inset.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def connect_cdf(connect_ms: np.ndarray, path: Path, title: str, target_ms: float) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = np.sort(connect_ms)
    if xs.size:
        ax.plot(xs / 1000, np.arange(1, xs.size + 1) / xs.size, label=f"calls (n={xs.size:,})")
        p99 = float(np.percentile(xs, 99)) / 1000
        ax.axhline(0.99, color="0.6", lw=0.8)
        ax.annotate(f"p99 {p99:.2f} s", (p99, 0.99), xytext=(5, -14), textcoords="offset points")
    ax.axvline(target_ms / 1000, color="tab:red", ls="--", lw=1, label="target p99 ≤ 2 s")
    ax.set_xscale("log")
    ax.set_xlabel("seconds from pressing Call to hearing the agent (log)")
    ax.set_ylabel("fraction of calls")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cost_vs_p99(
    points: list[dict[str, Any]], path: Path, title: str, target_krw: float = 0.25
) -> None:
    """One point per buffer floor: the day's KRW/user-minute against the surge's p99; where
    calls overflowed to direct mode, a second panel: the share of calls served direct."""
    direct = any(pt.get("surge_direct_calls") or pt.get("day_direct_calls") for pt in points)
    fig, axes = plt.subplots(1, 2 if direct else 1, figsize=(12 if direct else 7.5, 4.6))
    ax = axes[0] if direct else axes
    xs = [pt["day_krw_per_user_minute"] for pt in points]
    ys = [pt["surge_p99_ms"] / 1000 for pt in points]
    ax.plot(xs, ys, color="0.8", lw=1, zorder=1)  # in floor order
    stacked = 0  # refused points sit together at the top: stack their labels
    for k, (pt, x, y) in enumerate(zip(points, xs, ys, strict=True)):
        refused = pt["surge_refused"] + pt["day_refused"]
        ax.scatter([x], [y], marker="x" if refused else "o",
                   color="tab:red" if refused else "tab:blue", zorder=2)  # fmt: skip
        if refused:
            label, dy = f"floor {pt['floor_slots']}: {refused} refused", 8 + 13 * stacked
            stacked += 1
        else:
            label, dy = f"{pt['floor_slots']}", 8 - 18 * (k % 2)
        ax.annotate(label, (x, y), xytext=(4, dy), textcoords="offset points", fontsize=8)
    ax.axhline(2.0, color="tab:red", ls="--", lw=1, label="surge target: p99 ≤ 2 s")
    ax.axvline(target_krw, color="tab:orange", ls="--", lw=1,
               label=f"day target: ≤ {target_krw:g} KRW")  # fmt: skip
    ax.set_ylim(0, max(ys + [2.0]) * 1.3)
    ax.set_xlim(0, max(xs + [target_krw]) * 1.1)
    ax.set_xlabel("day trace: KRW per user-minute (warm buffer included)")
    ax.set_ylabel("surge trace: p99 press → heard, s")
    ax.set_title(f"{title} — labels: floor, slots", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if direct:
        bx = axes[1]
        for key, name, color in (("surge_direct_calls", "surge", "tab:purple"),
                                 ("day_direct_calls", "day", "tab:green")):  # fmt: skip
            share = [100 * pt[key] for pt in points]
            bx.plot(xs, share, marker="o", color=color, label=f"{name}: calls served direct")
            for pt, x, y in zip(points, xs, share, strict=True):
                bx.annotate(f"{pt['floor_slots']}", (x, y), xytext=(3, 4),
                            textcoords="offset points", fontsize=7)  # fmt: skip
        bx.axvline(target_krw, color="tab:orange", ls="--", lw=1)
        bx.set_xlim(0, max(xs + [target_krw]) * 1.1)
        bx.set_xlabel("day trace: KRW per user-minute")
        bx.set_ylabel("% of the trace's calls answered in direct mode")
        bx.set_title("direct-mode share by floor (slots)", fontsize=9)
        bx.grid(alpha=0.3)
        bx.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
