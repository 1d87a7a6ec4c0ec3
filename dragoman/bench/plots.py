"""PNG plots for benchmark reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def latency_cdf(series: dict[str, list[float]], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values in series.items():
        xs = np.sort(np.array([v for v in values if v is not None], dtype=float))
        if xs.size:
            ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=f"{label} (n={xs.size})")
    ax.set_xlabel("milliseconds after pressing Call")
    ax.set_ylabel("fraction of calls")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline(starts: list[float], latencies: list[float | None], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ok = [(s, v) for s, v in zip(starts, latencies, strict=True) if v is not None]
    failed = [s for s, v in zip(starts, latencies, strict=True) if v is None]
    if ok:
        ax.scatter(*zip(*ok, strict=True), s=10, label="press → first audio")
    if failed:
        ax.scatter(failed, [0] * len(failed), marker="x", color="red", label="refused / no audio")
    ax.set_xlabel("seconds since the benchmark started (press time)")
    ax.set_ylabel("milliseconds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def density_plot(steps: list[dict], goal: float, path: Path, title: str) -> None:
    """On-time share and server CPU as concurrent calls grow; memory per call process."""
    calls = [s["calls"] for s in steps]
    fig, (ax1, ax3) = plt.subplots(1, 2, figsize=(11, 4.2))
    on_time = [100 * (s["on_time"] or 0) for s in steps]
    ax1.plot(calls, on_time, "o-", label="frames on time (%)")
    ax1.axhline(100 * goal, ls="--", c="grey", lw=1, label=f"goal {100 * goal:g} %")
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("% of 20 ms frames sent ≤ 20 ms late")
    ax2 = ax1.twinx()
    ax2.plot(calls, [s["server_cores_used"] for s in steps], "s-", c="tab:red", label="cores")
    ax2.set_ylabel("server CPU (cores)", color="tab:red")
    ax1.legend(loc="lower left")
    ax1.set_title("punctuality and CPU")
    ax3.plot(calls, [s["uss_mb"] for s in steps], "o-", label="USS (unique)")
    ax3.plot(calls, [s["pss_mb"] for s in steps], "s-", label="PSS (shared pages split)")
    ax3.set_xlabel("concurrent calls")
    ax3.set_ylabel("MB per call process (median)")
    ax3.legend()
    ax3.set_title("memory per call process")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stacked_stages(
    labels: list[str], stages: dict[str, list[float]], target_ms: float, title: str, path: Path
) -> None:
    """One bar per item, split into its stages (ms), with the target as a line."""
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(labels) + 3), 4.2))
    bottom = np.zeros(len(labels))
    for name, values in stages.items():
        vals = np.array(values, dtype=float)
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom += vals
    ax.axhline(target_ms, ls="--", c="grey", lw=1, label=f"target p50 {target_ms:g} ms")
    ax.set_ylabel("ms after the end of speech")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lag_timeline(
    talk_spans: list[tuple[float, float]], modes: dict[str, dict], title: str, path: Path
) -> None:
    """Per mode: the source sentences (above) and the translated speech heard (below) on one
    time axis, a line from each sentence's end to the start of its translation."""
    fig, axes = plt.subplots(
        max(1, len(modes)), 1, figsize=(12, 1.9 + 1.6 * len(modes)), sharex=True, squeeze=False
    )
    for ax, (name, m) in zip(axes[:, 0], modes.items(), strict=False):
        ax.broken_barh([(a, b - a) for a, b in talk_spans], (1.1, 0.7), color="tab:blue")
        for i, (a, b) in enumerate(talk_spans):
            ax.text((a + b) / 2, 1.45, f"{i + 1}", ha="center", va="center", fontsize=7, c="w")
        speech = m.get("speech_spans", [])
        ax.broken_barh([(a, b - a) for a, b in speech], (0.1, 0.7), color="tab:orange")
        for row in m.get("per_sentence", []):
            if row.get("translation_start_s") is not None:
                ax.plot([row["end_s"], row["translation_start_s"]], [1.1, 0.8], c="grey", lw=0.8)
        ax.set_yticks([0.45, 1.45], ["translation heard", "source talk"])
        lag = m.get("lag_s", {})
        ax.set_title(f"{name}: lag p50 {lag.get('p50')} s, max {lag.get('max')} s", fontsize=10)
        ax.set_ylim(0, 2)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the talk started")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def capacity_plot(
    modes: dict[str, list[dict]], targets: dict[str, dict[str, float]], title: str, path: Path
) -> None:
    """Per mode: end of sentence → translated audio (p50, p95, max) against N talkers, the
    mode's bounds dashed (left); node and inference CPU against N (right)."""
    fig, (ax, cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {"consecutive": "tab:blue", "simultaneous": "tab:orange"}
    styles = {"p50_s": "-o", "p95_s": "--s", "max_s": ":^"}
    for i, (mode, steps) in enumerate(modes.items()):
        c = colours.get(mode, "tab:green")
        ns = [s["calls"] for s in steps]
        for key, style in styles.items():
            # None = past the "untranslated" bound: drawn at the top of the axis.
            ys = [s.get(key) if s.get(key) is not None else np.nan for s in steps]
            ax.plot(ns, ys, style, c=c, label=f"{mode} {key[:-2]}")
        for key, bound in targets.get(mode, {}).items():
            ax.axhline(bound, c=c, ls=(0, (2, 3)), lw=0.8, alpha=0.7)
            # Two modes' bounds may coincide (2.5 s): one label above the line, one below.
            ax.text(
                ns[0] if ns else 1,
                bound,
                f" {mode} {key[:-2]} ≤ {bound:g} s",
                fontsize=7,
                va="bottom" if i % 2 == 0 else "top",
            )
        cpu.plot(ns, [s.get("node_cores") for s in steps], "-o", c=c, label=f"{mode}: node")
        cpu.plot(
            ns,
            [s.get("inference_cores") for s in steps],
            "--s",
            c=c,
            label=f"{mode}: inference",
        )
    for a in (ax, cpu):
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("talkers at once (N)")
    ax.set_ylabel("sentence end → translated audio, s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    cpu.set_xlabel("talkers at once (N)")
    cpu.set_ylabel("cores used")
    cpu.grid(alpha=0.3)
    cpu.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak_plot(samples: list[dict], buckets: list[dict], faults: list[dict], path: Path) -> None:
    """``bench soak``: calls and agents, RSS and fds of the node's processes, Janus handles,
    connect p95 per bucket; fault windows shaded red on each."""
    t = [s["t_s"] for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    ax = axes[0][0]
    for key, label in (
        ("active_calls", "active calls"),
        ("idle_agents", "idle agents"),
        ("agents", "agent processes"),
        ("janus_handles", "Janus handles"),
    ):
        ax.plot(t, [s.get(key) if s.get(key) is not None else np.nan for s in samples], label=label)
    ax.set_ylabel("count")
    ax.set_title("calls, agents, Janus handles")
    ax.legend(loc="upper left", fontsize=8)
    roles = sorted({r for s in samples for r in (s.get("procs") or {})})
    for ax, key, title in (
        (axes[0][1], "rss_mb", "RSS (MB)"),
        (axes[1][0], "fds", "open fds"),
    ):
        for role in roles:
            ys = [((s.get("procs") or {}).get(role) or {}).get(key, np.nan) for s in samples]
            ax.plot(t, ys, label=role)
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[1][1]
    xs = [b["start_s"] for b in buckets if b["p95_ms"] is not None]
    ys = [b["p95_ms"] for b in buckets if b["p95_ms"] is not None]
    clean = [b["fault_free"] for b in buckets if b["p95_ms"] is not None]
    colours = ["tab:blue" if c else "tab:grey" for c in clean]
    ax.bar(xs, ys, width=0.8 * _bucket(buckets), align="edge", color=colours)
    ax.set_title("connect p95 per bucket (press → WebRTC up; grey: a fault in it)")
    ax.set_ylabel("ms")
    for row in axes:
        for ax in row:
            ax.set_xlabel("seconds since the churn started")
            ax.grid(alpha=0.3)
            for f in faults:
                if f.get("window"):
                    a, b = f["window"]
                    ax.axvspan(a, b, color="tab:red", alpha=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bucket(buckets: list[dict]) -> float:
    return buckets[1]["start_s"] - buckets[0]["start_s"] if len(buckets) > 1 else 60.0
