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
