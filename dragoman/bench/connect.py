"""``dragoman bench connect``: press Call → answer → ICE connected → first agent audio.

Synthetic callers (aiortc, the same client the tests use) are spread over several client
processes and press Call following an arrival pattern (burst, ramp, poisson). Each call is
held for a moment after the agent is heard, then hung up. The report gives percentiles of
each step, refused calls, the machine it ran on, and plots (CDF and timeline).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from dragoman.bench.arrivals import arrival_offsets
from dragoman.bench.caller import Caller, CallResult
from dragoman.bench.embedded import embedded_server
from dragoman.bench.stats import summarize

AUDIO_WAIT_S = 10.0
PER_FRAME = ("messages", "audio_rms", "audio_at")  # too bulky for the report
START_DELAY_S = 1.0  # after every client process is ready, so the first press is not skewed


@dataclass(frozen=True)
class ConnectParams:
    calls: int = 20
    pattern: str = "burst"
    duration_s: float = 10.0  # spread of ramp/poisson arrivals
    clients: int = 4
    hold_s: float = 2.0
    url: str | None = None


async def one_call(url: str, client: httpx.AsyncClient, hold_s: float) -> CallResult:
    caller = Caller(url, send_audio=False, keep_listening=False)
    try:
        result = await caller.call(client)
        if result.status != 201:
            return result
        deadline = time.monotonic() + AUDIO_WAIT_S
        while result.first_audio_ms is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(hold_s)
        if caller.channel_open:
            caller.send({"v": 1, "type": "hangup"})
            await asyncio.sleep(0.1)
        return result
    finally:
        await caller.close()


async def _client_main(url: str, offsets: list[float], t0: float, hold_s: float) -> list[dict]:
    limits = httpx.Limits(max_connections=len(offsets) + 1)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def timed(offset: float) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, t0 + offset - time.time()))
            pressed = time.time() - t0
            r = await one_call(url, client, hold_s)
            row = {k: v for k, v in asdict(r).items() if k not in PER_FRAME}
            row["press_s"] = round(pressed, 3)
            return row

        return await asyncio.gather(*(timed(o) for o in offsets))


def _client_process(url: str, offsets: list[float], hold_s: float, conn: Any) -> None:
    conn.send("ready")  # imports are done: aiortc and friends take a second to load
    t0 = conn.recv()
    conn.send(asyncio.run(_client_main(url, offsets, t0, hold_s)))


def run_clients(url: str, p: ConnectParams, on_progress: Any = print) -> list[dict[str, Any]]:
    offsets = arrival_offsets(p.pattern, p.calls, p.duration_s)
    ctx = multiprocessing.get_context("spawn")
    n = max(1, min(p.clients, p.calls))
    shares = [offsets[i::n] for i in range(n)]
    procs, conns = [], []
    for share in shares:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client_process, args=(url, share, p.hold_s, child))
        proc.start()
        procs.append(proc)
        conns.append(parent)
    for c in conns:
        assert c.recv() == "ready"
    t0 = time.time() + START_DELAY_S
    on_progress(f"  {n} client processes ready; {p.calls} calls, pattern {p.pattern}")
    for c in conns:
        c.send(t0)
    rows: list[dict[str, Any]] = []
    for c in conns:
        rows += c.recv()
        on_progress(f"  {len(rows)}/{p.calls} calls done")
    for proc in procs:
        proc.join(10)
    return sorted(rows, key=lambda r: r["press_s"])


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


def report(rows: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == 201]
    return {
        "params": params,
        "machine": machine(),
        "calls": len(rows),
        "refused": sum(1 for r in rows if r["status"] != 201),
        "no_audio": sum(1 for r in ok if r["first_audio_ms"] is None),
        "press_to_answer_ms": summarize([r["answer_ms"] for r in ok]),
        "press_to_connected_ms": summarize([r["connected_ms"] for r in ok]),
        "press_to_first_packet_ms": summarize([r["first_packet_ms"] for r in ok]),
        "press_to_first_audio_ms": summarize([r["first_audio_ms"] for r in ok]),
        # The client's own offer (aiortc, in Python, sharing the cores with the server) is
        # slow where a browser's is not; this is the rest: POST → first audio.
        "client_offer_ms": summarize([r["offer_ms"] for r in ok]),
        "post_to_first_audio_ms": summarize(
            [
                r["first_audio_ms"] - r["offer_ms"]
                for r in ok
                if r["first_audio_ms"] is not None and r["offer_ms"] is not None
            ]
        ),
        "server_total_ms": summarize([r["server_timings"].get("total") for r in ok]),
        "per_call": rows,
    }


def write_report(rep: dict[str, Any], out: Path) -> Path:
    from dragoman.bench.plots import latency_cdf, timeline

    out.mkdir(parents=True, exist_ok=True)
    path = out / "connect.json"
    path.write_text(json.dumps(rep, indent=2))
    rows = rep["per_call"]
    title = f"{rep['calls']} calls, {rep['params']['pattern']} ({rep['machine']['cores']} cores)"
    latency_cdf(
        {
            "answer": [r["answer_ms"] for r in rows],
            "ICE connected": [r["connected_ms"] for r in rows],
            "first agent packet": [r["first_packet_ms"] for r in rows],
            "first audio (decoded)": [r["first_audio_ms"] for r in rows],
        },
        f"press Call → …, {title}",
        out / "connect_cdf.png",
    )
    timeline(
        [r["press_s"] for r in rows],
        [r["first_audio_ms"] for r in rows],
        f"press → first audio over time, {title}",
        out / "connect_timeline.png",
    )
    return path


def main(p: ConnectParams, out: Path) -> dict[str, Any]:
    print(f"bench connect: {p.calls} calls, {p.pattern}, {p.clients} client processes", flush=True)
    if p.url is None:
        env = {
            "DRAGOMAN_MAX_CALLS": str(max(p.calls, 2)),
            # Muted callers never reach Whisper: this measures connecting, not inference.
            "DRAGOMAN_LOCAL_CAPACITY": str(max(p.calls, 2)),
            # Cover every slot with a waiting process: the point of the pre-forked pool.
            "DRAGOMAN_IDLE_MEMORY_BUDGET_MB": str(max(p.calls, 2) * 80),
        }
        print("  starting an embedded dragoman serve…", flush=True)
        with embedded_server(out / "serve.log", **env) as url:
            rows = run_clients(url, p)
    else:
        rows = run_clients(p.url, p)
    rep = report(rows, {**asdict(p), "url": p.url or "embedded"})
    path = write_report(rep, out)
    for key in (
        "client_offer_ms",
        "press_to_answer_ms",
        "press_to_connected_ms",
        "press_to_first_packet_ms",
        "press_to_first_audio_ms",
        "post_to_first_audio_ms",
        "server_total_ms",
    ):
        s = rep[key]
        print(
            f"  {key:26s} p50 {s['p50']}  p95 {s['p95']}  p99 {s['p99']}  max {s['max']}"
            f"  (n={s['count']})"
        )
    print(f"  refused {rep['refused']}, no audio {rep['no_audio']}; saved {path} + plots")
    return rep
